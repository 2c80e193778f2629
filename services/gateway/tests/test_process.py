"""``python -m costwise.gateway`` as its own process (its composition root connects by itself), and logs."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import httpx
import pytest
from nats.aio.client import Client as Nats
from nats.js import JetStreamContext

from costwise.gateway import GatewayApp, GatewaySettings, build
from costwise.testing import free_port

from .conftest import gateway_process, responding


async def wait_until_up(url: str, timeout: float = 30) -> None:
    async with httpx.AsyncClient() as http, asyncio.timeout(timeout):
        while True:
            try:
                await http.get(f"{url}/openapi.json")
                return
            except httpx.TransportError:
                await asyncio.sleep(0.1)


async def test_the_gateway_process_serves_until_sigterm(
    nats_url: str, gateway: GatewayApp, unique: str, js: JetStreamContext
) -> None:
    port = free_port()
    env = {**os.environ, "COSTWISE_GATEWAY_NATS_URL": nats_url, "COSTWISE_GATEWAY_PORT": str(port)}
    proc = await gateway_process(env)
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_until_up(url)
        key = await gateway.gateway.keys.create(unique)
        auth = {"Authorization": f"Bearer {key.secret}"}
        async with httpx.AsyncClient(base_url=url, headers=auth) as http, responding(js, unique):
            reply = await http.post(
                "/v1/chat/completions", json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
            )
            oversized_head = await http.get("/v1/requests/x", headers={"x-padding": "p" * (20 << 10)})
        assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"] == "echo: hi"
        assert 400 <= oversized_head.status_code < 500  # a head over max_header_bytes is refused
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0, err.decode()[-2000:]


async def test_keys_never_reach_the_logs(
    base_url: str, tenant_key: tuple[str, str], js: JetStreamContext, caplog: pytest.LogCaptureFixture
) -> None:
    tenant, key = tenant_key
    caplog.set_level(logging.DEBUG)
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(base_url=base_url) as http, responding(js, tenant):
        await http.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
        await http.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}x"})
    assert "/v1/chat/completions" in caplog.text  # the access log did run
    # The secret is everything after "cw-<key id>-" (token_urlsafe: it may hold "-" itself).
    assert key not in caplog.text and key.split("-", 2)[2] not in caplog.text


@pytest.mark.parametrize(
    "setting, value, named",
    [("PORT", "70000", "COSTWISE_GATEWAY_PORT"), ("CATALOG", "/nonexistent/catalog.toml", "catalog")],
    ids=["settings", "catalog"],
)
async def test_bad_configuration_is_one_line_and_exit_code_2(
    nats_url: str, setting: str, value: str, named: str
) -> None:
    env = {**os.environ, "COSTWISE_GATEWAY_NATS_URL": nats_url, f"COSTWISE_GATEWAY_{setting}": value}
    proc = await gateway_process(env)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    [line] = err.decode().strip().splitlines()  # no traceback
    assert line.startswith("costwise-gateway: ") and named in line


async def refused(url: str) -> bool:
    try:
        async with httpx.AsyncClient() as http:
            await http.get(f"{url}/openapi.json")
    except httpx.ConnectError:
        return True
    return False


async def test_stop_closes_what_build_opened_and_nothing_injected(nats_url: str, nc: Nats) -> None:
    port = free_port()
    own = await build(GatewaySettings(nats_url=nats_url, port=port))
    await own.start()
    assert not await refused(f"http://127.0.0.1:{port}")
    await own.stop()
    assert own.nc.is_closed and await refused(f"http://127.0.0.1:{port}")
    unstarted = await build(GatewaySettings(nats_url=nats_url))
    await unstarted.close()
    assert unstarted.nc.is_closed
    injected = await build(GatewaySettings(port=free_port()), nc=nc)
    await injected.start()
    await injected.stop()
    assert injected.nc is nc and nc.is_connected
    await nc.flush()  # still usable, not only not closed
