from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import pytest_asyncio
from nats.aio.client import Client as Nats
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from costwise.client import Client
from costwise.contracts import (
    ChatMessage,
    Completion,
    DeadLetter,
    ErrorCode,
    InferenceRequest,
    Job,
    SamplingParams,
    UsageEvent,
    encode,
    subjects,
)
from costwise.messaging import MSG_ID, publish
from costwise.testing import first_stored
from costwise.worker import Worker, WorkerSettings, build
from costwise.worker.engine import Progress

MAX_LEN = 2048  # conftest.TINY_MAX_MODEL_LEN


@pytest_asyncio.fixture
async def start_worker(nc: Nats, engine: Any, unique: str) -> AsyncIterator[Callable[..., Any]]:
    """Start workers of a pool unique to this test, all sharing the session's engine."""
    workers: list[Worker] = []

    async def start(tracer_provider: Any = None, **overrides: Any) -> Worker:
        settings = WorkerSettings(pool=unique, max_model_len=MAX_LEN, ack_wait_s=5, heartbeat_s=1, **overrides)
        worker = await build(settings, nc=nc, engine=engine, tracer_provider=tracer_provider)
        await worker.start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        await worker.drain(0)


def _job(pool: str, rid: str, prompt: str = "hello", max_tokens: int = 16, **kw: Any) -> Job:
    req = InferenceRequest(
        request_id=rid,
        tenant=pool,
        messages=[ChatMessage(role="user", content=prompt)],
        sampling=SamplingParams(max_tokens=max_tokens, temperature=0.0),
    )
    return Job(job_id=rid, request=req, pool=pool, **kw)


async def _completion(js: JetStreamContext, pool: str, job_id: str, timeout: float = 60) -> Completion:
    return await first_stored(
        js, subjects.completions(pool), Completion, lambda c: c.job.job_id == job_id, timeout=timeout
    )


async def _dead_letter(js: JetStreamContext, request_id: str) -> DeadLetter:
    return await first_stored(js, subjects.dead_letters("worker"), DeadLetter, lambda d: d.request_id == request_id)


async def test_job_runs_on_vllm_and_completes_with_usage(js: JetStreamContext, start_worker: Any, unique: str) -> None:
    await start_worker()
    await publish(js, subjects.jobs(unique), _job(unique, "j1", max_tokens=12), msg_id="j1")
    done = await _completion(js, unique, "j1")
    assert done.usage.completion_tokens == 12 and done.finish_reason == "length"
    assert done.usage.prompt_tokens > 0 and done.model == "tiny-llama" and done.text
    assert done.timings.engine_s > 0 and done.resumed_tokens == 0
    assert done.logprobs is None  # nothing judges a direct job's answer: its logprobs are not computed


async def test_a_judged_job_carries_its_tokens_logprobs(js: JetStreamContext, start_worker: Any, unique: str) -> None:
    await start_worker()
    await publish(js, subjects.jobs(unique), _job(unique, "j2", max_tokens=12, stage="cascade_small"), msg_id="j2")
    done = await _completion(js, unique, "j2")
    assert done.logprobs is not None and done.logprobs.count == 12 and done.logprobs.min <= done.logprobs.mean <= 0


async def test_resumed_checkpoint_gives_the_same_text_as_an_uninterrupted_run(
    js: JetStreamContext, start_worker: Any, engine: Any, unique: str
) -> None:
    await start_worker()
    await publish(js, subjects.jobs(unique), _job(unique, "full", max_tokens=40), msg_id="full")
    full = await _completion(js, unique, "full")
    # The tokens a preempted worker would have checkpointed: the first 15 of the same greedy run.
    prompt_ids = engine.prompt_ids([ChatMessage(role="user", content="hello")])
    progress = Progress()
    await engine.generate(prompt_ids, SamplingParams(max_tokens=15, temperature=0.0), progress)
    head = progress.token_ids
    assert len(head) == 15
    # As if this job had been resumed once already, by a worker whose prefill of 7 tokens was not billed yet.
    ckpt = msgspec.structs.replace(progress.checkpoint(engine.decode(head), worker_id="gone"), recomputed_tokens=7)
    await publish(js, subjects.jobs(unique), _job(unique, "resumed", max_tokens=40, checkpoint=ckpt), msg_id="resumed")
    resumed = await _completion(js, unique, "resumed")
    assert resumed.resumed_tokens == len(head) and len(prompt_ids) == resumed.usage.prompt_tokens
    assert resumed.text == full.text
    usage = await first_stored(js, subjects.usage(unique), UsageEvent, lambda u: u.job_id == "resumed", timeout=10)
    assert usage.recomputed_prompt_tokens == 7 + len(prompt_ids) + len(head)


async def test_sigterm_drain_hands_back_a_checkpoint_that_another_worker_resumes(
    js: JetStreamContext, start_worker: Any, unique: str, tracer_provider: Any, span_exporter: Any
) -> None:
    first = await start_worker()
    trace_id = "0af7651916cd43dd8448eb211c80319c"  # the request's trace, as the router's publish carried it
    await js.publish(
        subjects.jobs(unique),
        encode(_job(unique, "long", max_tokens=1500)),
        headers={MSG_ID: "long", "traceparent": f"00-{trace_id}-b7ad6b7169203331-01"},
    )
    while not first.running or len(next(iter(first.running.values())).progress.token_ids) < 20:
        await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()
    drained_at = loop.time()
    await first.drain(0)  # spot notice with no grace: checkpoint and hand back at once
    assert loop.time() - drained_at < 1.0
    await start_worker(tracer_provider=tracer_provider)
    done = await _completion(js, unique, "long", timeout=120)
    assert done.resumed_tokens >= 20 and done.job.checkpoint is not None
    # The handed-back job kept the request's trace: the resuming worker's completion carries it on.
    sub = await js.subscribe(subjects.completions(unique), ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    try:
        stored = await sub.next_msg(timeout=10)
    finally:
        await sub.unsubscribe()
    assert stored.headers is not None and stored.headers["traceparent"].split("-")[1] == trace_id
    [resumed_span] = [sp for sp in span_exporter.get_finished_spans() if sp.name == "worker.job"]
    assert [dict(link.attributes or {}).get("costwise.retry") for link in resumed_span.links] == [True]
    assert done.usage.completion_tokens == len(done.job.checkpoint.token_ids) + (
        done.usage.completion_tokens - done.resumed_tokens
    )
    # The resuming worker prefilled prompt + checkpoint again: its usage event says so, for billing.
    usage = await first_stored(js, subjects.usage(unique), UsageEvent, lambda u: u.job_id == "long", timeout=10)
    assert usage.usage == done.usage
    assert usage.recomputed_prompt_tokens == done.usage.prompt_tokens + done.resumed_tokens


async def test_over_long_prompt_gets_a_typed_error_and_a_dead_letter(
    nc: Nats, js: JetStreamContext, start_worker: Any, unique: str
) -> None:
    await start_worker()
    job = _job(unique, "huge", prompt="word " * 3000, max_tokens=16)
    await publish(js, subjects.jobs(unique), job, msg_id="huge")
    result = await Client(nc).result(unique, "huge", timeout=30)
    assert result.error is not None and result.error.code == ErrorCode.PROMPT_TOO_LONG
    assert str(MAX_LEN) in result.error.message
    assert (await _dead_letter(js, "huge")).code == ErrorCode.PROMPT_TOO_LONG
    # Still serving.
    await publish(js, subjects.jobs(unique), _job(unique, "after", max_tokens=4), msg_id="after")
    assert (await _completion(js, unique, "after")).usage.completion_tokens == 4


async def test_malformed_job_is_dead_lettered_and_the_caller_told(
    nc: Nats, js: JetStreamContext, start_worker: Any, unique: str
) -> None:
    await start_worker()
    doc = msgspec.json.decode(msgspec.json.encode(_job(unique, "bad")))
    doc["request"]["sampling"]["max_tokens"] = -5
    await js.publish(subjects.jobs(unique), msgspec.json.encode(doc), headers={MSG_ID: "bad"})
    result = await Client(nc).result(unique, "bad", timeout=30)
    assert result.error is not None and result.error.code == ErrorCode.MALFORMED_MESSAGE
    assert "max_tokens" in result.error.message
    assert (await _dead_letter(js, "bad")).code == ErrorCode.MALFORMED_MESSAGE


async def test_keeps_many_jobs_in_flight(js: JetStreamContext, start_worker: Any, unique: str) -> None:
    worker = await start_worker(max_in_flight=8)
    for i in range(12):
        await publish(js, subjects.jobs(unique), _job(unique, f"b{i}", max_tokens=200), msg_id=f"b{i}")
    peak = 0
    for _ in range(200):
        peak = max(peak, len(worker.running))
        if peak == 8:
            break
        await asyncio.sleep(0.02)
    assert peak == 8  # continuous batching: the engine holds up to max_in_flight jobs at once
    for i in range(12):
        await _completion(js, unique, f"b{i}")


async def test_a_job_past_its_deadline_is_not_generated(
    nc: Nats, js: JetStreamContext, start_worker: Any, unique: str
) -> None:
    await start_worker()
    job = _job(unique, "late")
    late = msgspec.structs.replace(job, request=msgspec.structs.replace(job.request, deadline_ms=1))
    await publish(js, subjects.jobs(unique), late, msg_id=f"{unique}-late")
    result = await Client(nc).result(unique, "late", timeout=30)
    assert result.error is not None and result.error.code == ErrorCode.DEADLINE_EXCEEDED
    assert (await _dead_letter(js, "late")).code == ErrorCode.DEADLINE_EXCEEDED
