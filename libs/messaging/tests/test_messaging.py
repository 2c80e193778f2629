from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from costwise.contracts import ChatMessage, InferenceRequest, subjects
from costwise.contracts.subjects import KeyValueSpec
from costwise.messaging import (
    MSG_ID,
    cap_key_value,
    ensure_consumer,
    ensure_key_value,
    ensure_streams,
    publish,
    pull_while_free,
    requeue,
)


def _req(tenant: str, rid: str = "r1") -> InferenceRequest:
    return InferenceRequest(request_id=rid, tenant=tenant, messages=[ChatMessage(role="user", content="hi")])


async def test_provisioning_is_idempotent(js: JetStreamContext) -> None:
    await ensure_streams(js)
    await ensure_streams(js)
    names = {info.config.name for info in await js.streams_info()}
    assert {s.name for s in subjects.ALL_STREAMS} <= names


async def test_consumer_provisioning_updates_an_existing_durable(js: JetStreamContext, unique: str) -> None:
    await ensure_consumer(js, subjects.worker_jobs(unique, ack_wait_s=30))
    await ensure_consumer(js, subjects.worker_jobs(unique, ack_wait_s=7))
    info = await js.consumer_info(subjects.JOBS.name, f"worker-{unique}")
    assert info.config.ack_wait == 7


async def test_an_idle_consumer_with_an_inactive_threshold_is_deleted_by_the_server(
    js: JetStreamContext, unique: str
) -> None:
    spec = subjects.worker_own(unique, "w1", idle_s=0.5)
    await ensure_consumer(js, spec)
    assert (await js.consumer_info(spec.stream, spec.durable)).config.inactive_threshold == 0.5
    for _ in range(40):
        try:
            await js.consumer_info(spec.stream, spec.durable)
        except NotFoundError:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the idle consumer outlived its inactive threshold")


async def test_requeue_moves_every_message_once_with_fresh_ids(js: JetStreamContext, unique: str) -> None:
    own, pool = subjects.worker_own_jobs(unique, "w1"), subjects.jobs(unique)
    originals = [
        await js.publish(own, f"job{i}".encode(), headers={MSG_ID: f"{unique}.j{i}", "traceparent": "tp"})
        for i in range(3)
    ]
    assert await requeue(js, subjects.JOBS.name, own, pool) == 3
    assert await requeue(js, subjects.JOBS.name, own, pool) == 0  # nothing left on the worker's subject
    info = await js.stream_info(subjects.JOBS.name, subjects_filter=f"{pool}.>")
    assert not info.state.subjects
    seq, moved = 1, []
    for _ in range(3):
        msg = await js.get_msg(subjects.JOBS.name, seq=seq, subject=pool, next=True)
        assert msg.seq is not None and msg.headers is not None and msg.headers["traceparent"] == "tp"
        moved.append((msg.data, msg.headers[MSG_ID].rsplit(".", 1)[0]))
        seq = msg.seq + 1
    assert moved == [(f"job{i}".encode(), f"{unique}.j{i}.requeued") for i in range(3)]
    # a second mover (another router, or a retry after a crash) republishing the same copy is dropped
    again = await js.publish(pool, b"job0", headers={MSG_ID: f"{unique}.j0.requeued.{originals[0].seq}"})
    assert again.duplicate


async def test_a_mover_that_finds_its_message_already_deleted_goes_on(js: JetStreamContext, unique: str) -> None:
    # A router's sweep and the worker's own hand-back (or two routers) may move one queue at once: whoever
    # deletes second finds the message gone (the server says "sequence not found"), which is not an error.
    class SecondMover:
        def __getattr__(self, name: str) -> Any:
            return getattr(js, name)

        async def delete_msg(self, stream: str, seq: int) -> bool:
            await js.delete_msg(stream, seq)  # the other mover, a moment earlier
            return await js.delete_msg(stream, seq)

    own, pool = subjects.worker_own_jobs(unique, "w1"), subjects.jobs(unique)
    # Another worker's job stays before them: a deleted message inside the stream is "sequence not found"
    # (10043); at its head it would be "no message found" (10057).
    await js.publish(subjects.worker_own_jobs(unique, "w2"), b"stays")
    for i in range(3):
        await js.publish(own, f"job{i}".encode(), headers={MSG_ID: f"{unique}.j{i}"})
    assert await requeue(SecondMover(), subjects.JOBS.name, own, pool) == 3  # type: ignore[arg-type]
    assert (await js.stream_info(subjects.JOBS.name, subjects_filter=pool)).state.subjects == {pool: 3}


async def test_same_msg_id_is_stored_once(js: JetStreamContext, unique: str) -> None:
    first = await publish(js, subjects.requests(unique), _req(unique), msg_id="dup-1")
    again = await publish(js, subjects.requests(unique), _req(unique), msg_id="dup-1")
    assert not first.duplicate and again.duplicate and again.seq == first.seq


async def test_publish_carries_trace_context(js: JetStreamContext, unique: str, tracer_provider) -> None:  # type: ignore[no-untyped-def]
    tracer = tracer_provider.get_tracer("t")
    with tracer.start_as_current_span("client") as span:
        await publish(js, subjects.requests(unique), _req(unique), msg_id=unique)
    msg = await js.get_last_msg(subjects.REQUESTS.name, subjects.requests(unique))
    assert msg.headers is not None and msg.headers[MSG_ID] == unique
    assert f"{span.get_span_context().trace_id:032x}" in msg.headers["traceparent"]


async def test_a_capped_bucket_evicts_its_oldest_entries(js: JetStreamContext, unique: str) -> None:
    spec = KeyValueSpec(bucket=f"test-{unique}", max_age_s=60)
    await ensure_key_value(js, spec)
    await cap_key_value(js, spec, 2)
    kv = await js.key_value(spec.bucket)
    for key in ("a", "b", "c"):
        await kv.put(key, b"1")
    assert sorted(await kv.keys()) == ["b", "c"]


async def test_a_bucket_read_directly_gets_the_direct_api_even_when_it_existed_before(
    js: JetStreamContext, unique: str
) -> None:
    plain = KeyValueSpec(bucket=f"test-{unique}", max_age_s=60)
    await ensure_key_value(js, plain)
    assert not (await js.stream_info(f"KV_{plain.bucket}")).config.allow_direct
    await ensure_key_value(js, KeyValueSpec(bucket=plain.bucket, max_age_s=60, direct_reads=True))
    assert (await js.stream_info(f"KV_{plain.bucket}")).config.allow_direct
    kv = await js.key_value(plain.bucket)
    await kv.put("k", b"v")
    assert (await kv.get("k")).value == b"v"  # nats-py reads through $JS.API.DIRECT.GET once the stream allows it


async def test_a_pull_loop_whose_consumer_is_deleted_raises_not_found(js: JetStreamContext, unique: str) -> None:
    # JetStream answers a pull for a deleted consumer like an unavailable one (503): the loop must tell the
    # two apart, or a worker whose own queue expired would wait on it forever.
    spec = subjects.worker_jobs(unique, ack_wait_s=30)
    await ensure_streams(js)
    await ensure_consumer(js, spec)
    psub = await js.pull_subscribe_bind(spec.durable, spec.stream)

    async def admit(msgs: list[Msg]) -> None:
        raise AssertionError("nothing was published")

    loop = asyncio.create_task(
        pull_while_free(psub, want=lambda: 1, freed=asyncio.Event(), stopping=lambda: False, admit=admit)
    )
    await asyncio.sleep(0.2)
    await js.delete_consumer(spec.stream, spec.durable)
    try:
        with pytest.raises(NotFoundError):
            await asyncio.wait_for(loop, 10)
    finally:
        await psub.unsubscribe()


async def test_a_pull_loop_serves_again_within_a_second_or_two_of_its_consumers_new_leader(
    nc: Client, unique: str
) -> None:
    # The node leading a clustered consumer died: every pull gets 503 (nobody serves MSG.NEXT), and the surviving
    # replicas leave its info request unanswered until they elect a leader (4-9 s). Played on a real server under
    # a JetStream API prefix of this test's own, so that the election happens when the test says: while the loop
    # waits on its info request. Waiting there for nats-py's default 5 s left the consumer idle that long.
    prefix = f"{unique}.API"
    psub = await nc.jetstream(prefix=prefix).pull_subscribe_bind("c", "S")
    asked = asyncio.Event()
    admitted: asyncio.Queue[float] = asyncio.Queue()
    stop = False

    async def silent(msg: Msg) -> None:
        asked.set()

    async def serve(msg: Msg) -> None:
        await nc.publish(msg.reply, b"job")

    async def admit(msgs: list[Msg]) -> None:
        admitted.put_nowait(time.monotonic())

    info = await nc.subscribe(f"{prefix}.CONSUMER.INFO.S.c", cb=silent)
    loop = asyncio.create_task(
        pull_while_free(psub, want=lambda: 1, freed=asyncio.Event(), stopping=lambda: stop, admit=admit)
    )
    try:
        await asyncio.wait_for(asked.wait(), 5)  # a pull got 503: the loop asks whether its consumer still exists
        elected = time.monotonic()
        leader = await nc.subscribe(f"{prefix}.CONSUMER.MSG.NEXT.S.c", cb=serve)
        served = await asyncio.wait_for(admitted.get(), 10)
        assert served - elected < 2.5, f"pulled again {served - elected:.1f} s after the new leader"
        await leader.unsubscribe()
    finally:
        stop = True
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        await info.unsubscribe()
        await psub.unsubscribe()
