"""The nats-py typed consumer against a real nats-server: ack by the handler, bounded concurrency, the guard."""

from __future__ import annotations

import asyncio
from pathlib import Path

from nats.js import JetStreamContext
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costwise.contracts import ChatMessage, DeadLetter, ErrorCode, InferenceRequest, Result, subjects
from costwise.contracts.subjects import ConsumerSpec
from costwise.messaging import (
    Consumer,
    NatsServer,
    Refusal,
    Slots,
    ack_current,
    connect,
    current_subject,
    ensure_consumer,
    ensure_streams,
    publish,
)
from costwise.testing import first_stored


def _req(tenant: str, rid: str) -> InferenceRequest:
    return InferenceRequest(request_id=rid, tenant=tenant, messages=[ChatMessage(role="user", content="hi")])


async def _spec(js: JetStreamContext, unique: str, *, max_deliver: int = 5) -> ConsumerSpec:
    await ensure_streams(js)
    spec = ConsumerSpec(
        durable=f"test-{unique}",
        stream=subjects.ROUTE.name,
        filter_subject=subjects.route(unique),
        ack_wait_s=5,
        max_deliver=max_deliver,
    )
    await ensure_consumer(js, spec)
    return spec


async def _settled(js: JetStreamContext, spec: ConsumerSpec, *, timeout: float = 10) -> None:
    """Wait until the consumer has delivered everything and nothing awaits an ack."""
    async with asyncio.timeout(timeout):
        while True:
            info = await js.consumer_info(spec.stream, spec.durable)
            if info.num_pending == 0 and info.num_ack_pending == 0:
                return
            await asyncio.sleep(0.05)


async def test_each_handler_acks_its_own_message_with_at_most_concurrency_at_once(
    js: JetStreamContext, unique: str
) -> None:
    spec = await _spec(js, unique)
    seen: list[str] = []
    running, peak = 0, 0

    async def on_request(req: InferenceRequest) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        assert current_subject() == subjects.route(req.tenant)
        await asyncio.sleep(0.02 * (int(req.request_id) % 3))  # finish out of order
        seen.append(req.request_id)
        running -= 1
        await ack_current()

    consumer = Consumer(spec, on_request, service="test", concurrency=4)
    await consumer.start(js)
    try:
        for i in range(20):
            await publish(js, subjects.route(unique), _req(unique, str(i)), msg_id=f"{unique}-{i}")
        await _settled(js, spec)
    finally:
        await consumer.stop()
    assert sorted(seen, key=int) == [str(i) for i in range(20)]  # each once: an ack went to the wrong message otherwise
    assert 1 < peak <= 4


async def test_a_malformed_message_is_dead_lettered_and_the_next_one_still_handled(
    js: JetStreamContext, unique: str
) -> None:
    spec = await _spec(js, unique)
    handled: list[str] = []

    async def on_request(req: InferenceRequest) -> None:
        handled.append(req.request_id)
        await ack_current()

    consumer = Consumer(spec, on_request, service=f"svc-{unique}")
    await consumer.start(js)
    try:
        await js.publish(
            subjects.route(unique),
            b'{"type": "inference_request.v1", "request_id": "bad", "tenant": "' + unique.encode() + b'"}',
        )
        await publish(js, subjects.route(unique), _req(unique, "good"), msg_id=f"{unique}-good")
        letter = await first_stored(js, subjects.dead_letters(f"svc-{unique}"), DeadLetter, lambda d: True)
        answer = await first_stored(js, subjects.results(unique, "bad"), Result, lambda r: True)
        await _settled(js, spec)
    finally:
        await consumer.stop()
    assert letter.code is ErrorCode.MALFORMED_MESSAGE and "messages" in letter.reason
    assert answer.status == "error" and answer.error is not None and answer.error.code is ErrorCode.MALFORMED_MESSAGE
    assert handled == ["good"]


async def test_a_failing_handler_is_retried_then_dead_lettered(js: JetStreamContext, unique: str) -> None:
    spec = await _spec(js, unique, max_deliver=2)
    attempts = 0

    async def on_request(req: InferenceRequest) -> None:
        nonlocal attempts
        attempts += 1
        raise RuntimeError("boom")

    consumer = Consumer(spec, on_request, service=f"svc-{unique}")
    await consumer.start(js)
    try:
        await publish(js, subjects.route(unique), _req(unique, "r"), msg_id=f"{unique}-r")
        letter = await first_stored(js, subjects.dead_letters(f"svc-{unique}"), DeadLetter, lambda d: True)
        await _settled(js, spec)
    finally:
        await consumer.stop()
    assert attempts == 2
    assert letter.code is ErrorCode.MAX_DELIVERIES_EXCEEDED and "RuntimeError: boom" in letter.reason


async def test_the_handler_runs_in_a_span_continuing_the_publishers_trace(
    js: JetStreamContext, unique: str, tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    spec = await _spec(js, unique)
    done = asyncio.Event()

    async def on_request(req: InferenceRequest) -> None:
        await ack_current()
        done.set()

    consumer = Consumer(spec, on_request, service="test", tracer=tracer_provider.get_tracer("t"))
    await consumer.start(js)
    try:
        with tracer_provider.get_tracer("t").start_as_current_span("client") as client:
            await publish(js, subjects.route(unique), _req(unique, "r"), msg_id=f"{unique}-r")
        await asyncio.wait_for(done.wait(), 10)
    finally:
        await consumer.stop()
    (span,) = [s for s in span_exporter.get_finished_spans() if s.name == f"{subjects.route(unique)} process"]
    assert span.context.trace_id == client.get_span_context().trace_id
    assert span.parent is not None and span.parent.span_id == client.get_span_context().span_id


async def test_pulling_goes_on_after_the_server_restarts(tmp_path: Path, unique: str) -> None:
    server = NatsServer(tmp_path).start()
    nc = await connect(server.url, name="test")
    js = nc.jetstream()
    spec = await _spec(js, unique)
    handled: asyncio.Queue[str] = asyncio.Queue()

    async def on_request(req: InferenceRequest) -> None:
        await ack_current()
        handled.put_nowait(req.request_id)

    consumer = Consumer(spec, on_request, service="test")
    await consumer.start(js)
    try:
        await publish(js, subjects.route(unique), _req(unique, "before"), msg_id=f"{unique}-before")
        assert await asyncio.wait_for(handled.get(), 10) == "before"
        await asyncio.to_thread(server.stop, kill=True)
        await asyncio.sleep(1.5)  # a few fetches fail while it is down
        server = await asyncio.to_thread(NatsServer(tmp_path, port=server.port).start)  # the one to stop below
        async with asyncio.timeout(20):
            while True:  # publishing may fail until the client has reconnected
                try:
                    await publish(js, subjects.route(unique), _req(unique, "after"), msg_id=f"{unique}-after")
                    break
                except Exception:
                    await asyncio.sleep(0.2)
        async with asyncio.timeout(20):
            # At least once: an ack the killed server had not written yet brings "before" back first.
            while await handled.get() != "after":
                pass
    finally:
        await consumer.stop()
        await nc.close()
        server.stop()


async def test_a_payload_naming_another_tenant_is_refused_and_answered_to_the_subjects_tenant(
    js: JetStreamContext, unique: str
) -> None:
    spec = await _spec(js, unique)
    victim = f"{unique}v"
    handled: list[str] = []

    async def on_request(req: InferenceRequest) -> None:
        handled.append(req.request_id)
        await ack_current()

    consumer = Consumer(spec, on_request, service=f"svc-{unique}")
    await consumer.start(js)
    try:
        # published on the forger's own subject, naming the victim in the payload
        await publish(js, subjects.route(unique), _req(victim, "forged"), msg_id=f"{unique}-forged")
        await publish(js, subjects.route(unique), _req(unique, "honest"), msg_id=f"{unique}-honest")
        letter = await first_stored(js, subjects.dead_letters(f"svc-{unique}"), DeadLetter, lambda d: True)
        answer = await first_stored(js, subjects.results(unique, "forged"), Result, lambda r: True)
        await _settled(js, spec)
    finally:
        await consumer.stop()
    assert letter.code is ErrorCode.TENANT_MISMATCH and letter.tenant == unique
    assert answer.error is not None and answer.error.code is ErrorCode.TENANT_MISMATCH and answer.tenant == unique
    assert handled == ["honest"]
    info = await js.stream_info(subjects.RESULTS.name, subjects_filter=subjects.tenant_results(victim))
    assert not info.state.subjects, "nothing may be published among the victim's results"


async def test_a_batch_handler_gets_many_at_once_and_its_refusals_are_dead_lettered_the_rest_acked(
    js: JetStreamContext, unique: str
) -> None:
    spec = await _spec(js, unique)
    batches: list[list[str]] = []

    async def on_requests(reqs: list[InferenceRequest]) -> dict[int, Refusal]:
        batches.append([r.request_id for r in reqs])
        return {i: Refusal(ErrorCode.INVALID_REQUEST, "odd") for i, r in enumerate(reqs) if int(r.request_id) % 2}

    for i in range(10):  # stored before the consumer pulls: one fetch takes them all
        await publish(js, subjects.route(unique), _req(unique, str(i)), msg_id=f"{unique}-{i}")
    consumer = Consumer(spec, on_requests, service=f"svc-{unique}", batch=8)
    await consumer.start(js)
    try:
        await _settled(js, spec)
    finally:
        await consumer.stop()
    assert [len(b) for b in batches] == [8, 2]
    letters = await js.stream_info(subjects.DEAD_LETTERS.name, subjects_filter=subjects.dead_letters(f"svc-{unique}"))
    assert letters.state.subjects == {subjects.dead_letters(f"svc-{unique}"): 5}


async def test_stop_hands_back_a_message_whose_handler_did_not_finish(js: JetStreamContext, unique: str) -> None:
    spec = await _spec(js, unique)
    started = asyncio.Event()

    async def on_request(req: InferenceRequest) -> None:
        started.set()
        await asyncio.sleep(3600)

    consumer = Consumer(spec, on_request, service="test")
    await consumer.start(js)
    await publish(js, subjects.route(unique), _req(unique, "slow"), msg_id=f"{unique}-slow")
    await asyncio.wait_for(started.wait(), 10)
    await consumer.stop(grace_s=0.1)
    # handed back at once (nak), not after ack_wait (5 s): a second consumer gets it within 3 s
    again: asyncio.Queue[int] = asyncio.Queue()

    async def on_again(req: InferenceRequest) -> None:
        again.put_nowait(1)
        await ack_current()

    second = Consumer(spec, on_again, service="test")
    await second.start(js)
    try:
        await asyncio.wait_for(again.get(), 3)
    finally:
        await second.stop()


async def test_consumers_sharing_slots_never_run_more_handlers_than_the_slots_together(
    js: JetStreamContext, unique: str
) -> None:
    # "_" keeps them apart from other tests' tokens: "t1x28" + "3" is a later test's "t1x283", and a router of that
    # test (routers share one durable) would route these leftover requests into its pool.
    tenants = [f"{unique}_{i}" for i in range(4)]
    specs = [await _spec(js, tenant) for tenant in tenants]
    running, peak = 0, 0

    async def on_request(req: InferenceRequest) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1
        await ack_current()

    slots = Slots(2)  # four idle pulls see two free slots each: what they fetch beyond two must wait its turn
    consumers = [Consumer(spec, on_request, service="test", slots=slots) for spec in specs]
    for consumer in consumers:
        await consumer.start(js)
    try:
        for i in range(6):
            for tenant in tenants:
                await publish(js, subjects.route(tenant), _req(tenant, str(i)), msg_id=f"{tenant}-{i}")
        for spec in specs:
            await _settled(js, spec)
    finally:
        for consumer in consumers:
            await consumer.stop()
    assert peak == 2
    assert slots.held == slots.running == 0


async def test_a_consumer_that_may_recreate_itself_comes_back_after_being_deleted(
    js: JetStreamContext, unique: str
) -> None:
    spec = await _spec(js, unique)
    handled: asyncio.Queue[str] = asyncio.Queue()

    async def on_request(req: InferenceRequest) -> None:
        await ack_current()
        handled.put_nowait(req.request_id)

    consumer = Consumer(spec, on_request, service="test", recreate=True)
    await consumer.start(js)
    try:
        await js.delete_consumer(spec.stream, spec.durable)
        await asyncio.sleep(1.0)  # the next fetch finds it gone
        await publish(js, subjects.route(unique), _req(unique, "after"), msg_id=f"{unique}-after")
        assert await asyncio.wait_for(handled.get(), 10) == "after"
        assert consumer.pulling is not None and not consumer.pulling.done()
    finally:
        await consumer.stop()
