"""An Idempotency-Key names one request of one caller: the same body replays it, another body is a 422."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest
import pytest_asyncio
from nats.js import JetStreamContext

from costwise.budget import Budgets, open_budgets
from costwise.contracts import subjects
from costwise.contracts.subjects import REQUESTS, ROUTE
from costwise.gateway import ApiKey, GatewayApp

from .conftest import responding

CHAT, SUBMIT = "/v1/chat/completions", "/v1/requests"
HELLO = {"model": "auto", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}
GOODBYE = {**HELLO, "messages": [{"role": "user", "content": "goodbye"}]}


@pytest_asyncio.fixture(loop_scope="session")
async def asgi(gateway: GatewayApp) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway.app), base_url="http://gw") as http:
        yield http


@pytest_asyncio.fixture(loop_scope="session")
async def budgets(js: JetStreamContext) -> Budgets:
    return await open_budgets(js)


def keyed(key: ApiKey, idempotency_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key.secret}", "Idempotency-Key": idempotency_key}


async def queued(js: JetStreamContext, tenant: str) -> int:
    """How many requests of ``tenant`` wait in the queues, the cache's and (``bypass``) the router's (no consumer
    takes them in these tests)."""
    total = 0
    for stream, subject in ((REQUESTS.name, subjects.requests(tenant)), (ROUTE.name, subjects.route(tenant))):
        info = await js.stream_info(stream, subjects_filter=subject)
        total += sum((info.state.subjects or {}).values())
    return total


def reused(response: httpx.Response, request_id: str) -> None:
    """``response`` is the 422 for a reused key, OpenAI-shaped, naming the request the key stands for."""
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "idempotency_key_reused",
        "Idempotency-Key",
    )
    assert repr(request_id) in error["message"] and response.headers["x-should-retry"] == "false"


async def test_the_same_key_and_body_is_one_request_answered_twice(
    asgi: httpx.AsyncClient, gateway: GatewayApp, js: JetStreamContext, unique: str
) -> None:
    headers = keyed(await gateway.gateway.keys.create(unique), "order-1")
    async with responding(js, unique) as responder:
        first = await asgi.post(CHAT, json=HELLO, headers=headers)
        again = await asgi.post(
            CHAT, json={**HELLO, "messages": [{"role": "user", "content": "hello"}]}, headers=headers
        )
    assert first.status_code == again.status_code == 200
    assert first.json()["id"] == again.json()["id"] == "chatcmpl-order-1"
    assert first.json()["choices"] == again.json()["choices"]
    assert [r.request_id for r in responder.seen] == ["order-1"]


@pytest.mark.parametrize(
    "path, body",
    [
        (SUBMIT, GOODBYE),
        (CHAT, GOODBYE),
        (SUBMIT, {**HELLO, "max_tokens": 9}),
        (CHAT, {**HELLO, "model": "large"}),
        (SUBMIT, {**HELLO, "user": "u-2"}),
        (SUBMIT, {**HELLO, "costwise": {"cache": {"mode": "bypass"}}}),
    ],
    ids=["async-prompt", "sync-prompt", "max-tokens", "model", "user", "cache-mode"],
)
async def test_the_same_key_with_another_body_is_422_naming_the_first_request_and_queues_nothing(
    asgi: httpx.AsyncClient,
    gateway: GatewayApp,
    budgets: Budgets,
    js: JetStreamContext,
    unique: str,
    path: str,
    body: dict[str, object],
) -> None:
    await budgets.set_limit(unique, Decimal(5), "month")
    headers = keyed(await gateway.gateway.keys.create(unique), "order 42 / retry")  # not a token: idem-<hash>
    first = await asgi.post(SUBMIT, json=HELLO, headers=headers)
    request_id = first.json()["id"]
    assert first.status_code == 202 and request_id.startswith("idem-")
    reused(await asgi.post(path, json=body, headers=headers), request_id)
    assert await queued(js, unique) == 1
    state = await budgets.state(unique)  # refused before admission: nothing reserved for it
    assert state is not None and set(state.reservations) == {request_id}
    # The key still names the first request: its own body is a replay (which the queue's dedup drops).
    again = await asgi.post(SUBMIT, json=HELLO, headers=headers)
    assert again.status_code == 202 and again.json()["id"] == request_id and await queued(js, unique) == 1


async def test_a_key_belongs_to_its_caller_and_tenant(
    asgi: httpx.AsyncClient, gateway: GatewayApp, js: JetStreamContext, unique: str
) -> None:
    keys = gateway.gateway.keys
    mine, colleague, stranger = await keys.create(unique), await keys.create(unique), await keys.create(unique + "x")
    assert (await asgi.post(SUBMIT, json=HELLO, headers=keyed(mine, "shared"))).status_code == 202
    # Another API key of the same tenant names the same request id, but is another caller (budgets, ledger).
    reused(await asgi.post(SUBMIT, json=HELLO, headers=keyed(colleague, "shared")), "shared")
    # Another tenant's "shared" is a request of its own, whatever its body.
    other = await asgi.post(SUBMIT, json=GOODBYE, headers=keyed(stranger, "shared"))
    assert other.status_code == 202 and other.json()["id"] == "shared"
    assert await queued(js, unique) == 1 and await queued(js, unique + "x") == 1


async def test_a_key_whose_request_was_refused_is_free_for_another_body(
    asgi: httpx.AsyncClient, gateway: GatewayApp, budgets: Budgets, js: JetStreamContext, unique: str
) -> None:
    key = await gateway.gateway.keys.create(unique)
    await budgets.set_limit(unique, Decimal(0), "month")
    assert (await asgi.post(SUBMIT, json=HELLO, headers=keyed(key, "order-7"))).status_code == 402
    poll = await asgi.get("/v1/requests/order-7", headers={"Authorization": f"Bearer {key.secret}"})
    assert poll.status_code == 404  # never queued, so never "queued"
    await budgets.set_limit(unique, Decimal(5), "month")
    assert (await asgi.post(SUBMIT, json=GOODBYE, headers=keyed(key, "order-7"))).status_code == 202
    assert await queued(js, unique) == 1
