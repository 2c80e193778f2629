"""Budget admission over HTTP (real budgets in the session's NATS), the keys CLI, the committed OpenAPI document."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest
import pytest_asyncio
from nats.aio.client import Client as Nats
from nats.js import JetStreamContext

from costwise.budget import Budgets, estimate_usd, open_budgets
from costwise.catalog import load_catalog
from costwise.contracts import ErrorCode, InferenceRequest, Result, encode, subjects
from costwise.contracts.subjects import GATEWAY_KEYS, REQUESTS
from costwise.gateway import ApiKey, GatewayApp, GatewaySettings, build
from costwise.gateway.keys import KeyStore
from costwise.gateway.openapi import COMMITTED, render

from .conftest import failed, gateway_process, responding

HELLO = {"model": "auto", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 100}


@pytest_asyncio.fixture(loop_scope="session")
async def budgets(js: JetStreamContext) -> Budgets:
    """The budgets as billing's CLI sets them: another process's view of the same bucket."""
    return await open_budgets(js)


@pytest_asyncio.fixture(loop_scope="session")
async def asgi(gateway: GatewayApp) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway.app), base_url="http://gw") as http:
        yield http


def auth(key: ApiKey) -> dict[str, str]:
    return {"Authorization": f"Bearer {key.secret}"}


async def queued(js: JetStreamContext, tenant: str) -> int:
    """How many requests of ``tenant`` wait in the queue (no consumer takes them in these tests)."""
    info = await js.stream_info(REQUESTS.name, subjects_filter=subjects.requests(tenant))
    return sum((info.state.subjects or {}).values())


async def test_an_over_budget_request_is_402_at_once_and_never_queued(
    gateway: GatewayApp, asgi: httpx.AsyncClient, budgets: Budgets, js: JetStreamContext, unique: str
) -> None:
    key = await gateway.gateway.keys.create(unique)
    await budgets.set_limit(unique, Decimal(0), "month")
    spent = await asgi.post("/v1/chat/completions", json=HELLO, headers=auth(key))
    later = await asgi.post("/v1/requests", json=HELLO, headers=auth(key))
    assert spent.status_code == later.status_code == 402
    assert spent.headers["x-should-retry"] == "false"
    error = spent.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("insufficient_quota", None, "budget_exceeded")
    assert error["message"].startswith(f"budget of $0 per month for tenant '{unique}' cannot cover")
    assert await queued(js, unique) == 0  # refused before the queue: nothing for the router to refuse again
    state = await budgets.state(unique)
    assert state is not None and not state.reservations


async def test_a_request_within_budget_is_queued_with_its_reservation_under_its_own_id(
    gateway: GatewayApp, asgi: httpx.AsyncClient, budgets: Budgets, js: JetStreamContext, unique: str
) -> None:
    key = await gateway.gateway.keys.create(unique)
    await budgets.set_limit(unique, Decimal(5), "month")
    async with responding(js, unique) as responder:
        fine = await asgi.post("/v1/chat/completions", json=HELLO, headers=auth(key))
    assert fine.status_code == 200 and len(responder.seen) == 1
    [request] = responder.seen
    assert request.api_key_id == key.key_id  # the key's public id travels (budgets, ledger per key)
    assert key.key_id in key.secret and key.secret not in encode(request).decode()  # never the secret
    # The worst case (every allowed output token at the baseline price) is held under the request's id, the id
    # the router admits each attempt under again (replacing it) and billing settles.
    state = await budgets.state(unique)
    assert state is not None and set(state.reservations) == {request.request_id}
    reserved = state.reservations[request.request_id].usd
    assert reserved == estimate_usd(load_catalog().baseline_price, request) > 0


async def test_an_api_keys_budget_refuses_its_requests_but_not_the_other_keys_of_its_tenant(
    gateway: GatewayApp, asgi: httpx.AsyncClient, budgets: Budgets, js: JetStreamContext, unique: str
) -> None:
    capped, free = [await gateway.gateway.keys.create(unique) for _ in range(2)]
    await budgets.set_limit(unique, Decimal("0.000001"), "day", api_key_id=capped.key_id)
    refused = await asgi.post("/v1/requests", json=HELLO, headers=auth(capped))
    assert refused.status_code == 402
    assert f"API key '{capped.key_id}' of tenant '{unique}'" in refused.json()["error"]["message"]
    accepted = await asgi.post("/v1/requests", json=HELLO, headers=auth(free))
    assert accepted.status_code == 202 and await queued(js, unique) == 1


async def test_a_rate_limited_result_is_429(
    gateway: GatewayApp, asgi: httpx.AsyncClient, js: JetStreamContext, unique: str
) -> None:
    key = await gateway.gateway.keys.create(unique)

    async def provider_says_slow_down(request: InferenceRequest) -> Result:
        return failed(request, ErrorCode.RATE_LIMITED, "slow down")

    async with responding(js, unique, provider_says_slow_down):
        fast = await asgi.post("/v1/chat/completions", json=HELLO, headers=auth(key))
    assert fast.status_code == 429
    assert fast.json()["error"] == {
        "message": "slow down",
        "type": "rate_limit_error",
        "param": None,
        "code": "rate_limited",
    }


async def test_keys_cli_prints_a_key_once_that_then_authenticates(
    gateway: GatewayApp, nats_url: str, unique: str, js: JetStreamContext
) -> None:
    env = {**os.environ, "COSTWISE_GATEWAY_NATS_URL": nats_url}
    out = await cli(env, "keys", "create", "--tenant", unique)
    secret = next(line.split()[-1] for line in out.splitlines() if line.startswith("key:"))
    assert await gateway.gateway.keys.tenant_of(secret) == unique
    stored = await (await js.key_value(GATEWAY_KEYS.bucket)).get(secret.split("-")[1])  # under its id…
    assert stored.value and secret.encode() not in stored.value  # …as a digest, never the key
    await cli(env, "keys", "revoke", secret.split("-")[1])
    for _ in range(100):  # another process revoked it: refused once the purge reaches this gateway's watch
        if await gateway.gateway.keys.tenant_of(secret) is None:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the revoked key still works")
    with pytest.raises(AssertionError, match="invalid tenant"):
        await cli(env, "keys", "create", "--tenant", "not.a.token")


async def cli(env: dict[str, str], *args: str) -> str:
    proc = await gateway_process(env, *args)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


def test_committed_openapi_document_matches_the_app() -> None:
    assert COMMITTED.read_text() == render(), "run `python -m costwise.gateway openapi` and commit openapi.json"


async def test_a_bug_is_a_500_in_the_usual_error_shape(nc: Nats, unique: str, monkeypatch: pytest.MonkeyPatch) -> None:
    built = await build(GatewaySettings(), nc=nc)
    key = await built.gateway.keys.create(unique)

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the budget store has a bug")

    monkeypatch.setattr(built.gateway.budgets, "admit", broken)
    transport = httpx.ASGITransport(app=built.app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
            response = await http.post("/v1/chat/completions", json=HELLO, headers=auth(key))
    finally:
        await built.close()
    assert response.status_code == 500
    assert response.json()["error"] == {
        "message": "internal error",
        "type": "server_error",
        "param": None,
        "code": "internal",
    }


async def test_a_following_store_sees_keys_created_and_revoked_elsewhere(js: JetStreamContext, unique: str) -> None:
    bucket = await js.key_value(GATEWAY_KEYS.bucket)
    following, elsewhere = await KeyStore(bucket).follow(), KeyStore(bucket)  # two gateways, one bucket
    try:
        key = await elsewhere.create(unique)
        assert await following.tenant_of(key.secret) == unique  # read from the bucket until the watch has it
        await asyncio.sleep(0.5)  # the watch delivers in milliseconds: from here the record is served from memory
        assert following.following
        await elsewhere.revoke(key.key_id)
        for _ in range(100):  # refused as soon as the purge reaches the watch
            if await following.tenant_of(key.secret) is None:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("a key revoked elsewhere kept working")
    finally:
        await following.stop()
    assert not following.following and await following.tenant_of(key.secret) is None  # stopped: reads the bucket
