"""costwise's own client on a tenant's own NATS user (``costwise nats-config --tenants a,b`` on a real server):
it publishes, waits and streams for its tenant, and cannot wait for another tenant's result.

Service users play the pipeline: svc-cache takes each request from its durable and stores the result, svc-worker
publishes the deltas of a streamed one.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from nats.aio.client import Client as Nats
from nats.js import JetStreamContext

from costwise.client import Client, Delta, connect_tenant
from costwise.contracts import InferenceRequest, Output, Result, StreamDelta, decode, encode, subjects
from costwise.messaging import ensure_consumer, publish
from costwise.testing import RecordingConnection, SecuredNats


async def _answer(cache: Nats, count: int, *, worker: Nats | None = None, pieces: tuple[str, ...] = ()) -> list[str]:
    """As the cache: take ``count`` requests from the durable and store an ok result for each (after publishing
    ``pieces`` as the request's deltas from ``worker``, as a worker streaming the answer would)."""
    js = cache.jetstream()
    await ensure_consumer(js, subjects.CACHE_REQUESTS)
    sub = await js.pull_subscribe_bind(subjects.CACHE_REQUESTS.durable, stream=subjects.REQUESTS.name)
    taken: list[InferenceRequest] = []
    while len(taken) < count:  # a fetch may return fewer than asked for
        for msg in await sub.fetch(count - len(taken), timeout=5):
            await msg.ack()
            taken.append(decode(msg.data, InferenceRequest))
    await sub.unsubscribe()
    for request in taken:
        rid = request.request_id
        for offset, piece in enumerate(pieces):
            delta = StreamDelta(request_id=rid, tenant=request.tenant, offset=offset, text=piece, tokens=1)
            assert worker is not None
            await worker.publish(subjects.deltas(request.tenant, rid), encode(delta))
        if worker is not None:
            await worker.flush()  # the deltas reach the server before the result is stored, as in the pipeline
        await _store(js, request.tenant, rid, "".join(pieces) or f"answer to {rid}")
    return [r.request_id for r in taken]


async def test_a_tenant_publishes_and_waits_for_its_results_on_its_own_user(
    conns: dict[str, RecordingConnection],
) -> None:
    a, cache = conns["a"], conns["cache"].nc
    client, errors_before = Client(a.nc), len(a.errors)
    stored_first = await client.publish(tenant="a", prompt="answered before anyone waits")
    assert await _answer(cache, 1) == [stored_first]
    assert (await client.result("a", stored_first, timeout=5)).output == Output(
        text=f"answer to {stored_first}", finish_reason="stop"
    )
    waited = await client.publish(tenant="a", prompt="answered while waiting")
    waiting = asyncio.create_task(client.result("a", waited, timeout=5))
    await asyncio.sleep(0.05)
    await _answer(cache, 1)
    assert (await waiting).request_id == waited
    many = {await client.publish(tenant="a", prompt=f"one of many {i}") for i in range(3)}
    assert set(await _answer(cache, 3)) == many
    found = await client.wait_all("a", many, timeout=5)
    assert set(found) == many and all(r.tenant == "a" and r.status == "ok" for r in found.values())
    assert a.errors[errors_before:] == []  # nothing the client did was refused


async def test_connect_tenant_streams_an_answer(secured: SecuredNats, conns: dict[str, RecordingConnection]) -> None:
    url = f"nats://{secured.hostport}"
    async with await connect_tenant(url, "a", user="tenant-a", password="pw-tenant_a") as client:
        got: list[Delta] = []

        async def follow() -> None:
            async for delta in client.stream(tenant="a", prompt="a story", request_id="streamed", timeout=5):
                got.append(delta)

        following = asyncio.create_task(follow())
        pieces = ("Once ", "upon ", "a time.")
        assert await _answer(conns["cache"].nc, 1, worker=conns["worker"].nc, pieces=pieces) == ["streamed"]
        await asyncio.wait_for(following, 10)
    assert [d.text for d in got] == [*pieces, ""]
    last = got[-1].result
    assert got[-1].error is None and last is not None and last.output is not None
    assert last.output.text == "Once upon a time."


async def test_a_tenant_cannot_wait_for_another_tenants_result(
    secured: SecuredNats, conns: dict[str, RecordingConnection]
) -> None:
    a, b, router = conns["a"], conns["b"], conns["router"]
    secret = Result(request_id="secret", tenant="b", status="ok", output=Output(text="b's", finish_reason="stop"))
    await publish(router.nc.jetstream(), subjects.results("b", "secret"), secret, msg_id="b.secret")
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"^no result for secret within 1.0s$"):
        await Client(a.nc).result("b", "secret", timeout=1.0)
    assert time.monotonic() - started < 2.5  # the caller's timeout, not the JetStream API's
    # Refused where it asked for exactly b's result: a consumer filtered on it, which a's user may not create.
    assert await a.violated(subjects.results("b", "secret"))
    create = f"$JS.API.CONSUMER.CREATE.{subjects.RESULTS.name}."
    b_secret = f".{subjects.results('b', 'secret')}"
    assert await secured.violation_logged("tenant-a", lambda s: s.startswith(create) and s.endswith(b_secret))
    with pytest.raises(TimeoutError, match=r"^1 of 1 results missing after 1.0s$"):
        await Client(a.nc).wait_all("b", {"secret"}, timeout=1.0)
    assert await a.violated(subjects.tenant_results("b"))
    assert (await Client(b.nc).result("b", "secret", timeout=5)).output == secret.output  # b itself can


async def test_a_tenants_reader_outlives_its_consumer(conns: dict[str, RecordingConnection]) -> None:
    """What an ordered consumer did for a tenant's reader, it still gets: a lost consumer (a node restarted; here
    deleted by a service) is replaced, from the message after the last one read (none twice, none missed)."""
    cache_js = conns["cache"].nc.jetstream()
    before = set(await _readers_of(cache_js, "a"))
    results = Client(conns["a"].nc).results("a")
    first = asyncio.create_task(anext(results))
    deadline = time.monotonic() + 5
    while not (made := set(await _readers_of(cache_js, "a")) - before):
        assert time.monotonic() < deadline and not first.done(), "the reader made no consumer"
        await asyncio.sleep(0.02)
    for rid in ("before-loss", "also-before"):
        await _store(cache_js, "a", rid)
    assert (await asyncio.wait_for(first, 5)).request_id == "before-loss"
    (name,) = made
    await cache_js.delete_consumer(subjects.RESULTS.name, name)
    await _store(cache_js, "a", "after-loss")
    got = [(await asyncio.wait_for(anext(results), 15)).request_id for _ in range(2)]
    await results.aclose()
    assert got == ["also-before", "after-loss"]


async def _readers_of(js: JetStreamContext, tenant: str) -> list[str]:
    infos = await js.consumers_info(subjects.RESULTS.name)
    return [i.name for i in infos if i.config.filter_subject == subjects.tenant_results(tenant)]


async def _store(js: JetStreamContext, tenant: str, rid: str, text: str = "") -> None:
    result = Result(request_id=rid, tenant=tenant, status="ok", output=Output(text=text or rid, finish_reason="stop"))
    await publish(js, subjects.results(tenant, rid), result, msg_id=subjects.dedup_id(tenant, rid))
