"""Issue 18 item 3: a callback that could never be delivered is refused at submission (400), before any budget is
reserved or anything queued; the webhooks service checks again at delivery."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest
import pytest_asyncio
from nats.aio.client import Client as Nats
from nats.js import JetStreamContext

from costwise.gateway import GatewayApp, GatewaySettings, build
from costwise.testing import free_port

from .conftest import resolve, responding

HELLO = {"model": "auto", "messages": [{"role": "user", "content": "hello"}]}


RECEIVER_PORT = free_port()
"""A webhook receiver on loopback (as in the webhooks tests), allow-listed by ``host:port``."""


@pytest_asyncio.fixture(loop_scope="session")
async def allowing(nc: Nats) -> AsyncIterator[GatewayApp]:
    """A gateway whose callback allow-list names the loopback receiver (``COSTWISE_GATEWAY_CALLBACK_ALLOW``)."""
    built = await build(
        GatewaySettings(callback_allow=[f"127.0.0.1:{RECEIVER_PORT}", "10.8.0.0/16"]), nc=nc, resolver=resolve
    )
    yield built
    await built.close()


@pytest_asyncio.fixture(loop_scope="session")
async def client(allowing: GatewayApp, unique: str) -> AsyncIterator[httpx.AsyncClient]:
    key = await allowing.gateway.keys.create(unique)
    transport = httpx.ASGITransport(app=allowing.app)
    headers = {"Authorization": f"Bearer {key.secret}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway", headers=headers) as http:
        yield http


async def submit(http: httpx.AsyncClient, url: str) -> httpx.Response:
    return await http.post("/v1/requests", json={**HELLO, "callback_url": url})


async def test_a_callback_for_a_tenant_without_a_webhook_secret_is_refused(
    client: httpx.AsyncClient, allowing: GatewayApp, unique: str
) -> None:
    await allowing.gateway.budgets.set_limit(unique, Decimal(100), "month")
    response = await submit(client, "https://hooks.example/cb")
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and error["param"] == "callback_url"
    assert "no webhook signing secret" in error["message"] and f"secret create --tenant {unique}" in error["message"]
    state = await allowing.gateway.budgets.state(unique)
    assert state is not None and not state.reservations  # refused before anything was reserved
    # Revoked is as good as none.
    await allowing.gateway.webhook_secrets.create(unique)
    assert (await submit(client, "https://hooks.example/cb")).status_code == 202
    await allowing.gateway.webhook_secrets.revoke(unique)
    assert (await submit(client, "https://hooks.example/cb")).status_code == 400


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:8080/hook", "loopback"),
        (f"http://127.0.0.1:{RECEIVER_PORT + 1 if RECEIVER_PORT < 65535 else 1}/hook", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://192.168.1.10/hook", "private"),
        ("https://internal.example/hook", "resolves to 10.1.2.3"),
        ("https://rebind.example/hook", "resolves to 192.168.1.20"),
        ("http://localhost:9000/hook", "local name"),
        ("https://nowhere.invalid/hook", "does not resolve"),
    ],
    ids=[
        "loopback",
        "loopback-other-port",
        "metadata",
        "private",
        "private-dns",
        "one-bad-answer",
        "localhost",
        "nxdomain",
    ],
)
async def test_a_callback_the_ssrf_policy_refuses_is_a_400(
    client: httpx.AsyncClient, allowing: GatewayApp, unique: str, url: str, why: str
) -> None:
    await allowing.gateway.webhook_secrets.create(unique)
    response = await submit(client, url)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "callback_refused" and error["param"] == "callback_url"
    assert why in error["message"]


async def test_an_allow_listed_or_public_callback_is_accepted_and_queued(
    client: httpx.AsyncClient, allowing: GatewayApp, js: JetStreamContext, unique: str
) -> None:
    await allowing.gateway.webhook_secrets.create(unique)
    urls = [f"http://127.0.0.1:{RECEIVER_PORT}/hook?token=abc", "http://10.8.1.2/hook", "https://hooks.example/cb"]
    async with responding(js, unique) as responder:
        for url in urls:
            response = await submit(client, url)
            assert response.status_code == 202, response.text
        async with asyncio.timeout(20):
            while len(responder.seen) < len(urls):
                await asyncio.sleep(0.05)
    assert [r.callback_url for r in responder.seen] == urls


async def test_the_default_allow_list_refuses_the_loopback_receiver(
    http_default: httpx.AsyncClient, gateway: GatewayApp, unique: str
) -> None:
    await gateway.gateway.webhook_secrets.create(unique)
    response = await submit(http_default, f"http://127.0.0.1:{RECEIVER_PORT}/hook")
    assert response.status_code == 400 and response.json()["error"]["code"] == "callback_refused"


@pytest_asyncio.fixture(loop_scope="session")
async def http_default(gateway: GatewayApp, unique: str) -> AsyncIterator[httpx.AsyncClient]:
    key = await gateway.gateway.keys.create(unique)
    transport = httpx.ASGITransport(app=gateway.app)
    headers = {"Authorization": f"Bearer {key.secret}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway", headers=headers) as http:
        yield http


def test_the_allow_list_setting_is_read_from_the_environment() -> None:
    from costwise.settings import load

    settings = load(
        GatewaySettings, "COSTWISE_GATEWAY_", {"COSTWISE_GATEWAY_CALLBACK_ALLOW": '["10.0.0.0/8", "127.0.0.1:9000"]'}
    )
    assert settings.callback_allow == ["10.0.0.0/8", "127.0.0.1:9000"]


async def test_a_bad_allow_entry_fails_the_build(nc: Nats) -> None:
    with pytest.raises(ValueError, match="neither a CIDR nor host:port"):
        await build(GatewaySettings(callback_allow=["example.com"]), nc=nc)


def test_without_its_own_allow_list_the_gateway_takes_the_webhooks_one() -> None:
    from costwise.gateway.settings import load_settings

    shared = {"COSTWISE_WEBHOOKS_ALLOW": '["10.8.0.0/16"]'}
    assert load_settings(shared).callback_allow == ["10.8.0.0/16"]
    own = {**shared, "COSTWISE_GATEWAY_CALLBACK_ALLOW": "[]"}
    assert load_settings(own).callback_allow == []
    assert load_settings({}).callback_allow == []
