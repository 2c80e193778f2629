from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import msgspec
import pytest_asyncio
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from costwise.catalog import default_catalog
from costwise.client import Client, new_request_id
from costwise.contracts import (
    ChatMessage,
    Completion,
    DeadLetter,
    ErrorCode,
    InferenceRequest,
    Job,
    Result,
    Usage,
    decode,
    encode,
    subjects,
)
from costwise.messaging import MSG_ID, ensure_consumer, publish
from costwise.router import Router, RouterSettings, build
from costwise.testing import first_stored, span_names


@pytest_asyncio.fixture
async def pool(nats_url: str, unique: str, tracer_provider) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    """A running router that sends model "auto" to a pool unique to this test."""
    router: Router = await build(
        RouterSettings(nats_url=nats_url), catalog=default_catalog(unique), tracer_provider=tracer_provider
    )
    await router.start()
    yield unique
    await router.stop()


async def _next_job(js: JetStreamContext, pool: str, job_id: str) -> Job:
    return decode((await _next_job_msg(js, pool, job_id)).data, Job)


async def _next_job_msg(js: JetStreamContext, pool: str, job_id: str) -> Msg:
    # JOBS is a work queue: read it the way a worker does, through the pool's durable pull consumer.
    spec = subjects.worker_jobs(pool)
    await ensure_consumer(js, spec)
    psub = await js.pull_subscribe_bind(spec.durable, spec.stream)
    # The router serves every tenant: requests other tests left in the stream may be routed here too.
    try:
        while True:
            msg = (await psub.fetch(1, timeout=10))[0]
            await msg.ack()
            if decode(msg.data, Job).job_id == job_id:
                return msg
    finally:
        await psub.unsubscribe()  # a pull subscription left on the session connection stalls its drain


async def _route(nc, tenant: str, prompt: str, *, model: str = "auto") -> str:  # type: ignore[no-untyped-def]
    """Do what the cache does on a miss: hand a request to the router."""
    req = InferenceRequest(
        request_id=new_request_id(), tenant=tenant, model=model, messages=[ChatMessage(role="user", content=prompt)]
    )
    msg_id = subjects.dedup_id(tenant, req.request_id)
    await publish(nc.jetstream(), subjects.route(tenant), req, msg_id=msg_id)
    return req.request_id


async def _next(js: JetStreamContext, subject: str, timeout: float = 10) -> bytes:
    sub = await js.subscribe(subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    try:
        return (await sub.next_msg(timeout=timeout)).data
    finally:
        await sub.unsubscribe()


async def test_request_becomes_a_job_for_its_pool(nc, js: JetStreamContext, pool: str) -> None:  # type: ignore[no-untyped-def]
    rid = await _route(nc, pool, "hello")
    job = await _next_job(js, pool, rid)
    assert job.pool == pool and job.request.messages[0].content == "hello"


async def test_completion_becomes_one_result(nc, js: JetStreamContext, pool: str) -> None:  # type: ignore[no-untyped-def]
    req = InferenceRequest(
        request_id="c1", tenant=pool, messages=[ChatMessage(role="user", content="q")], api_key_id="k1"
    )
    done = Completion(
        job=Job(job_id="c1", request=req, pool=pool),
        worker_id="w",
        spot=False,
        model="m",
        text="answer",
        finish_reason="stop",
        usage=Usage(prompt_tokens=3, completion_tokens=1),
    )
    for _ in range(2):  # a redelivered completion must not produce a second result
        await js.publish(subjects.completions(pool), encode(done))
    result = await Client(nc).result(pool, "c1", timeout=10)
    assert result.status == "ok" and result.output is not None and result.output.text == "answer"
    assert result.usage.prompt_tokens == 3 and result.source == "engine"
    assert result.api_key_id == "k1"  # billing closes the key budget's reservation with it
    info = await js.stream_info(subjects.RESULTS.name, subjects_filter=subjects.results(pool, "c1"))
    assert info.state.subjects == {subjects.results(pool, "c1"): 1}


async def test_unknown_model_gets_a_typed_error_and_a_dead_letter(nc, js: JetStreamContext, pool: str) -> None:  # type: ignore[no-untyped-def]
    rid = await _route(nc, pool, "hi", model="no-such-model")
    result = await Client(nc).result(pool, rid, timeout=10)
    assert result.status == "error" and result.error is not None
    assert result.error.code == ErrorCode.UNKNOWN_POOL and "no-such-model" in result.error.message
    letter = await _dead_letter_for(js, rid)
    assert letter.code == ErrorCode.UNKNOWN_POOL and letter.service == "router"


async def test_malformed_payload_is_dead_lettered_and_the_caller_told(nc, js: JetStreamContext, pool: str) -> None:  # type: ignore[no-untyped-def]
    bad = b'{"type":"inference_request.v1","request_id":"bad1","tenant":"%s","messages":"x","api_key_id":"k9"}' % (
        pool.encode()
    )
    await js.publish(subjects.route(pool), bad, headers={MSG_ID: f"{pool}-bad1"})
    await js.publish(subjects.route(pool), b"\xff\xfe not json", headers={MSG_ID: f"{pool}-bad2"})
    result = await Client(nc).result(pool, "bad1", timeout=10)
    assert result.error is not None and result.error.code == ErrorCode.MALFORMED_MESSAGE
    assert "messages" in result.error.message and result.api_key_id == "k9"  # peeked, as the request id is
    letter = await _dead_letter_for(js, "bad1")
    assert letter.payload == bad
    # The service keeps serving after poison messages.
    rid = await _route(nc, pool, "still there?")
    assert (await _next_job(js, pool, rid)).job_id == rid


async def test_one_trace_spans_publish_router_and_job(
    nc, js: JetStreamContext, pool: str, tracer_provider, span_exporter
) -> None:  # type: ignore[no-untyped-def]
    tracer = tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("client.publish") as root:
        rid = await _route(nc, pool, "trace me")
    trace_id = f"{root.get_span_context().trace_id:032x}"
    msg = await _next_job_msg(js, pool, rid)
    assert msg.headers is not None and trace_id in msg.headers["traceparent"]
    processed = lambda names: any(n.endswith("process") for n in names)  # noqa: E731
    assert processed(await span_names(span_exporter, root.get_span_context().trace_id, until=processed))


async def _dead_letter_for(js: JetStreamContext, request_id: str) -> DeadLetter:
    return await first_stored(js, subjects.dead_letters("router"), DeadLetter, lambda d: d.request_id == request_id)


async def test_job_whose_workers_keep_dying_ends_in_a_typed_error(nc, js: JetStreamContext, pool: str) -> None:  # type: ignore[no-untyped-def]
    # Workers that fetch the job and then vanish (SIGKILL) never ack, term or nak it: only JetStream's
    # max-deliveries advisory knows the job is dead.
    spec = msgspec.structs.replace(subjects.worker_jobs(pool), ack_wait_s=1, max_deliver=2)
    await ensure_consumer(js, spec)
    rid = await _route(nc, pool, "doomed")
    psub = await js.pull_subscribe_bind(spec.durable, spec.stream)
    for _ in range(spec.max_deliver):
        await psub.fetch(1, timeout=10)  # ... and the worker dies holding it
    # The server notices the job is out of deliveries when a surviving worker pulls again.
    await asyncio.sleep(spec.ack_wait_s)
    with contextlib.suppress(TimeoutError):
        await psub.fetch(1, timeout=2)
    await psub.unsubscribe()
    result = await Client(nc).result(pool, rid, timeout=20)
    assert result.error is not None and result.error.code == ErrorCode.MAX_DELIVERIES_EXCEEDED
    letter = await _dead_letter_for(js, rid)
    assert decode(letter.payload, Job).job_id == rid and letter.num_delivered == 2
    info = await js.stream_info(subjects.JOBS.name, subjects_filter=subjects.jobs(pool))
    assert not info.state.subjects  # removed from the work queue, not left to rot


async def test_a_routed_request_whose_payload_names_another_tenant_is_refused_to_its_publisher(
    nc,
    js: JetStreamContext,
    pool: str,  # type: ignore[no-untyped-def]
) -> None:
    victim = f"{pool}v"
    forged = InferenceRequest(
        request_id=new_request_id(), tenant=victim, messages=[ChatMessage(role="user", content="bill them")]
    )
    await publish(js, subjects.route(pool), forged, msg_id=subjects.dedup_id(pool, forged.request_id))
    result = decode(await _next(js, subjects.results(pool, forged.request_id)), Result)
    assert result.error is not None and result.error.code is ErrorCode.TENANT_MISMATCH
    jobs = await js.stream_info(subjects.JOBS.name, subjects_filter=subjects.jobs(pool))
    assert not jobs.state.subjects, "a forged request must reach no worker (nor the victim's budget)"


async def test_stop_closes_what_build_opened_and_nothing_injected(nats_url: str, nc, unique: str) -> None:  # type: ignore[no-untyped-def]
    own = await build(RouterSettings(nats_url=nats_url), catalog=default_catalog(unique))
    await own.start()
    await own.stop()
    assert own.nc.is_closed
    injected = await build(RouterSettings(nats_url=nats_url), nc=nc, catalog=default_catalog(unique))
    await injected.start()
    await injected.stop()
    assert nc.is_connected
