"""The HTTP API directly: input validation and limits, the async endpoint, idempotency, tenant isolation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from nats.js import JetStreamContext

from costwise.client import new_request_id
from costwise.contracts import CacheHit, CacheWrongHit, ErrorCode, InferenceRequest, Result, subjects
from costwise.gateway import GatewayApp
from costwise.messaging import publish
from costwise.testing import first_stored

from .conftest import failed, responding

CHAT = "/v1/chat/completions"
HELLO = {"model": "auto", "messages": [{"role": "user", "content": "hello"}]}


@pytest_asyncio.fixture(loop_scope="session")
async def http(base_url: str, tenant_key: tuple[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    """A plain HTTP client authenticated as the test's tenant."""
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {tenant_key[1]}"}) as client:
        yield client


def error_of(response: httpx.Response, status: int) -> dict[str, str]:
    assert response.status_code == status, response.text
    error: dict[str, str] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


@pytest.mark.parametrize(
    "body, code, mentions",
    [
        (b'{"model": "auto", "messages": [', "invalid_request", "JSON"),
        ({**HELLO, "temprature": 0.2}, "unknown_field", "temprature"),
        ({**HELLO, "max_tokens": 1_000_000}, "invalid_request", "max_tokens"),
        ({**HELLO, "messages": []}, "invalid_request", "messages"),
        ({**HELLO, "messages": [{"role": "wizard", "content": "x"}]}, "invalid_request", "role"),
        ({**HELLO, "n": 3}, "invalid_request", "n"),
        ({**HELLO, "costwise": {"cache": {"mode": "sometimes"}}}, "invalid_request", "mode"),
    ],
    ids=["bad-json", "unknown-field", "too-many-tokens", "no-messages", "bad-role", "n>1", "bad-extra"],
)
async def test_invalid_bodies_are_openai_style_400s(
    http: httpx.AsyncClient, body: dict[str, object] | bytes, code: str, mentions: str
) -> None:
    if isinstance(body, bytes):
        response = await http.post(CHAT, content=body, headers={"content-type": "application/json"})
    else:
        response = await http.post(CHAT, json=body)
    error = error_of(response, 400)
    assert error["type"] == "invalid_request_error" and error["code"] == code
    assert mentions in error["message"]


async def test_a_body_over_the_limit_is_413_whether_declared_or_streamed(
    http: httpx.AsyncClient, gateway: GatewayApp
) -> None:
    limit = gateway.gateway.settings.max_body_bytes
    big = b'{"model": "auto", "messages": [{"role": "user", "content": "' + b"x" * limit + b'"}]}'
    assert error_of(await http.post(CHAT, content=big), 413)["code"] == "request_too_large"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while reading
        step = 64 << 10
        for start in range(0, len(big), step):
            yield big[start : start + step]

    assert error_of(await http.post(CHAT, content=chunks()), 413)["code"] == "request_too_large"


async def test_a_missing_key_is_401(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as anonymous:
        error = error_of(await anonymous.post(CHAT, json=HELLO), 401)
        assert error["type"] == "authentication_error"
        error_of(await anonymous.get("/v1/requests/abc"), 401)


async def test_a_revoked_key_stops_working(
    http: httpx.AsyncClient, gateway: GatewayApp, tenant_key: tuple[str, str]
) -> None:
    key_id = tenant_key[1].split("-")[1]
    error_of(await http.get("/v1/requests/nothing-here"), 404)  # authenticated: the request is unknown
    assert await gateway.gateway.keys.revoke(key_id)
    error_of(await http.get("/v1/requests/nothing-here"), 401)
    assert not await gateway.gateway.keys.revoke(key_id)


async def test_async_request_is_queued_then_polled_and_an_idempotency_key_dedups(
    http: httpx.AsyncClient, tenant_key: tuple[str, str], js: JetStreamContext, gateway: GatewayApp
) -> None:
    tenant, _ = tenant_key
    await gateway.gateway.webhook_secrets.create(tenant)  # a callback needs a secret to sign with
    body = {**HELLO, "callback_url": "https://example.com/hook"}
    headers = {"Idempotency-Key": f"order-{tenant}"}
    first = await http.post("/v1/requests", json=body, headers=headers)
    assert first.status_code == 202 and first.json() == {
        "id": f"order-{tenant}",
        "object": "costwise.request",
        "status": "queued",
    }
    assert (await http.get(f"/v1/requests/order-{tenant}")).json()["status"] == "queued"
    again = await http.post("/v1/requests", json=body, headers=headers)
    assert again.status_code == 202 and again.json()["id"] == f"order-{tenant}"

    async with responding(js, tenant) as responder:
        status = await poll(http, f"order-{tenant}")
        await asyncio.sleep(0.3)  # room for a duplicate to arrive, if the queue had kept one
    assert [r.request_id for r in responder.seen] == [f"order-{tenant}"]
    assert responder.seen[0].callback_url == "https://example.com/hook"
    assert status["result"]["choices"][0]["message"]["content"] == "echo: hello"
    # The same key on the sync endpoint is the same request: its stored result, no new work.
    replay = await http.post(CHAT, json=HELLO, headers=headers)
    assert replay.status_code == 200 and replay.json()["id"] == f"chatcmpl-order-{tenant}"


async def test_an_idempotency_key_that_is_no_request_id_maps_to_a_stable_one(
    http: httpx.AsyncClient, tenant_key: tuple[str, str], js: JetStreamContext
) -> None:
    headers = {"Idempotency-Key": "order 42 / retry"}
    ids = {(await http.post("/v1/requests", json=HELLO, headers=headers)).json()["id"] for _ in range(2)}
    assert len(ids) == 1 and ids.pop().startswith("idem-")


async def test_a_failed_request_polls_as_failed_with_the_typed_error(
    http: httpx.AsyncClient, tenant_key: tuple[str, str], js: JetStreamContext
) -> None:
    async def too_long(request: InferenceRequest) -> Result:
        return failed(request, ErrorCode.PROMPT_TOO_LONG, "prompt + max_tokens exceed 2048 tokens")

    request_id = (await http.post("/v1/requests", json=HELLO)).json()["id"]
    async with responding(js, tenant_key[0], too_long):
        status = await poll(http, request_id)
    assert status["status"] == "failed"
    assert status["error"]["code"] == "prompt_too_long" and status["error"]["type"] == "invalid_request_error"


async def test_a_tenant_cannot_read_another_tenants_request(
    http: httpx.AsyncClient, gateway: GatewayApp, tenant_key: tuple[str, str], js: JetStreamContext, unique: str
) -> None:
    request_id = (await http.post("/v1/requests", json=HELLO)).json()["id"]
    async with responding(js, tenant_key[0]):
        await poll(http, request_id)
    other = await gateway.gateway.keys.create(unique + "b")
    stranger = {"Authorization": f"Bearer {other.secret}"}
    error = error_of(await http.get(f"/v1/requests/{request_id}", headers=stranger), 404)
    assert error["code"] == "request_not_found"
    # Ids are subject tokens: a wildcard or a dot never reaches the lookup.
    for probe in ("*", ">", f"{tenant_key[0]}.{request_id}"):
        assert (await http.get(f"/v1/requests/{probe}", headers=stranger)).status_code in (400, 404)


async def test_unknown_routes_answer_in_the_same_error_format(http: httpx.AsyncClient) -> None:
    assert error_of(await http.get("/v1/models/nope"), 404)["code"] == "not_found"
    assert error_of(await http.get(CHAT), 405)["code"] == "method_not_allowed"


async def poll(http: httpx.AsyncClient, request_id: str, timeout: float = 10) -> dict:  # type: ignore[type-arg]
    async with asyncio.timeout(timeout):
        while True:
            status = (await http.get(f"/v1/requests/{request_id}")).json()
            if status["status"] != "queued":
                return status  # type: ignore[no-any-return]
            await asyncio.sleep(0.05)


async def test_openai_message_forms_map_onto_the_contract(
    http: httpx.AsyncClient, tenant_key: tuple[str, str], js: JetStreamContext
) -> None:
    body = {
        "model": "large",
        "messages": [
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hello "}, {"type": "text", "text": "there"}]},
        ],
        "max_completion_tokens": 9,
        "stop": "END",
        "user": "u-17",
        "costwise": {"quality_floor": 0.8, "cost_ceiling_usd": 0.01, "metadata": {"team": "search"}},
    }
    async with responding(js, tenant_key[0]) as responder:
        reply = await http.post(CHAT, json=body)
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"] == "echo: hello there"
    [request] = responder.seen
    assert [(m.role, m.content) for m in request.messages] == [("system", "be brief"), ("user", "hello there")]
    assert (request.sampling.max_tokens, request.sampling.stop) == (9, ["END"])
    assert (request.quality_floor, request.cost_ceiling_usd) == (0.8, 0.01)
    assert request.metadata == {"team": "search", "user": "u-17"}


async def _stored_result(js: JetStreamContext, tenant: str, source: str) -> str:
    request_id = new_request_id()
    hit = CacheHit(kind="semantic", cached_request_id=new_request_id(), similarity=0.93)
    cached = source.startswith("cache_")
    result = Result(request_id=request_id, tenant=tenant, status="ok", source=source, cache=hit if cached else None)  # type: ignore[arg-type]
    await publish(js, subjects.results(tenant, request_id), result, msg_id=subjects.dedup_id(tenant, request_id))
    return request_id


async def test_a_wrong_cache_hit_is_reported_for_the_tenants_own_cache_hits_only(
    http: httpx.AsyncClient, gateway: GatewayApp, tenant_key: tuple[str, str], js: JetStreamContext, unique: str
) -> None:
    tenant = tenant_key[0]
    hit = await _stored_result(js, tenant, "cache_semantic")
    response = await http.post(f"/v1/requests/{hit}/wrong", json={"reason": "asked about closing, not opening"})
    assert response.status_code == 202 and response.json()["status"] == "reported", response.text
    stored = await first_stored(js, subjects.cache_control(tenant), CacheWrongHit, lambda c: c.request_id == hit)
    assert stored.reason == "asked about closing, not opening"
    engine = await _stored_result(js, tenant, "engine")
    assert error_of(await http.post(f"/v1/requests/{engine}/wrong", json={}), 404)["code"] == "not_a_cache_hit"
    other = await gateway.gateway.keys.create(unique + "w")
    stranger = {"Authorization": f"Bearer {other.secret}"}
    assert (
        error_of(await http.post(f"/v1/requests/{hit}/wrong", json={}, headers=stranger), 404)["param"] == "request_id"
    )
    assert error_of(await http.post(f"/v1/requests/{hit}/wrong", json={"why": 1}), 400)["code"] == "unknown_field"
