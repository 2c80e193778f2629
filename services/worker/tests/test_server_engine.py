"""Workers fronting an OpenAI-compatible engine server: a real nats-server, and the bench's recording server on a
real port as the engine server (no vLLM here). Recorded text and the server's usage, streamed deltas, a SIGTERM
hand-back continued from text by another worker (or started over), a server that is down, and refusals."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import pytest_asyncio
from nats.aio.client import Client as Nats
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from costwise.bench.recording import Recordings, RecordingServer
from costwise.bench.recording_text import count_tokens, prompt_tokens, tokens
from costwise.catalog import Catalog, Tier, WorkerPool
from costwise.client import Client
from costwise.contracts import (
    ChatMessage,
    Completion,
    DeadLetter,
    ErrorCode,
    InferenceRequest,
    Job,
    SamplingParams,
    StreamDelta,
    UsageEvent,
    decode,
    subjects,
)
from costwise.messaging import publish
from costwise.testing import first_stored, free_port
from costwise.worker import Worker, WorkerSettings, build
from costwise.worker._service import pool_queue

MODEL = "recorded-model"
ASKED = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many?"
RECORDED = (
    "Natalia sold 48 / 2 = 24 clips in May. Altogether she sold 48 + 24 = 72 clips in April and May, so the answer"
    " is 72. To check: half of 48 is 24, and 48 plus 24 makes 72."
)
PROMPT_TOKENS = prompt_tokens([("user", ASKED)], continuing=False)


def _catalog(pool: str) -> Catalog:
    backend = WorkerPool(
        name=pool,
        model=MODEL,
        engine_url="http://127.0.0.1:1/v1",  # the recording server reads only the model → tier map
        spot=True,
        gpu_usd_per_hour=0.3,
        prefill_tokens_per_s=5000.0,
        decode_tokens_per_s=500.0,
    )
    return Catalog(tiers=[Tier(name="small", backends=[pool])], backends=[backend], baseline=pool)


@pytest.fixture
def recordings(tmp_path: Path) -> Recordings:
    path = tmp_path / "workload.jsonl"
    path.write_bytes(msgspec.json.encode({"prompt": ASKED, "responses": {"small": RECORDED}}) + b"\n")
    return Recordings.from_workload(path)


@pytest_asyncio.fixture
async def start_worker(nc: Nats, unique: str) -> AsyncIterator[Callable[..., Any]]:
    """Workers of a pool unique to this test, each fronting ``engine_url``; all drained at the end."""
    workers: list[Worker] = []

    async def start(engine_url: str, **overrides: Any) -> Worker:
        settings = WorkerSettings(
            pool=unique, model=MODEL, engine_url=engine_url, ack_wait_s=5, heartbeat_s=1, **overrides
        )
        worker = await build(settings, nc=nc)
        await worker.start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        await worker.drain(0)


def _job(pool: str, rid: str, *, stream: bool = False, max_tokens: int = 256, prompt: str = ASKED) -> Job:
    req = InferenceRequest(
        request_id=rid,
        tenant=pool,
        messages=[ChatMessage(role="user", content=prompt)],
        sampling=SamplingParams(max_tokens=max_tokens),
        stream=stream,
    )
    return Job(job_id=rid, request=req, pool=pool)


async def _completion(js: JetStreamContext, pool: str, job_id: str) -> Completion:
    return await first_stored(js, subjects.completions(pool), Completion, lambda c: c.job.job_id == job_id, timeout=60)


async def _usage(js: JetStreamContext, tenant: str, job_id: str) -> UsageEvent:
    return await first_stored(js, subjects.usage(tenant), UsageEvent, lambda u: u.job_id == job_id, timeout=10)


async def _deltas(nc: Nats, tenant: str, rid: str) -> tuple[list[StreamDelta], Any]:
    got: list[StreamDelta] = []

    async def on(msg: Msg) -> None:
        got.append(decode(msg.data, StreamDelta))

    return got, await nc.subscribe(subjects.deltas(tenant, rid), cb=on)


async def test_a_job_completes_with_the_recorded_text_and_the_servers_usage(
    nc: Nats, js: JetStreamContext, start_worker: Any, unique: str, recordings: Recordings
) -> None:
    server = RecordingServer(recordings, _catalog(unique))
    deltas, sub = await _deltas(nc, unique, "streamed")
    async with server.serving() as base_url:
        await start_worker(base_url)
        await publish(js, subjects.jobs(unique), _job(unique, "plain"), msg_id=f"{unique}-plain")
        await publish(js, subjects.jobs(unique), _job(unique, "streamed", stream=True), msg_id=f"{unique}-streamed")
        plain, streamed = await _completion(js, unique, "plain"), await _completion(js, unique, "streamed")
        await nc.flush()
        await sub.unsubscribe()
    assert plain.text == streamed.text == RECORDED and plain.finish_reason == "stop" and plain.model == MODEL
    assert plain.usage.completion_tokens == count_tokens(RECORDED) and plain.usage.prompt_tokens == PROMPT_TOKENS
    assert plain.logprobs is None and plain.resumed_tokens == 0  # a recording has no logprobs: none invented
    assert plain.timings.engine_s > 0 and plain.timings.first_token_s > 0
    usage = await _usage(js, unique, "plain")
    assert usage.usage == plain.usage and usage.recomputed_prompt_tokens == 0
    # The streamed job's deltas: one per token, contiguous, adding up to the completion.
    assert [d.offset for d in deltas] == list(range(len(deltas))) and deltas[-1].final
    assert sum(d.tokens for d in deltas) == streamed.usage.completion_tokens
    assert "".join(d.text for d in deltas) == RECORDED and deltas[-1].finish_reason == "stop"


@pytest.mark.parametrize("continue_from_text", [True, False])
async def test_a_sigtermed_worker_hands_back_text_that_the_next_worker_continues(
    nc: Nats, js: JetStreamContext, start_worker: Any, unique: str, recordings: Recordings, continue_from_text: bool
) -> None:
    server = RecordingServer(recordings, _catalog(unique), tokens_per_s=40.0)  # ~1.6 s for the answer
    deltas, sub = await _deltas(nc, unique, "long")
    async with server.serving() as base_url:
        first = await start_worker(base_url)
        await publish(js, subjects.jobs(unique), _job(unique, "long", stream=True), msg_id=f"{unique}-long")
        while not first.running or next(iter(first.running.values())).progress.tokens < 10:
            await asyncio.sleep(0.02)
        await first.drain(0)  # spot notice, no grace: checkpoint the text and hand back at once
        await start_worker(base_url, continue_from_text=continue_from_text)
        done = await _completion(js, unique, "long")
        await nc.flush()
        await sub.unsubscribe()
    ckpt = done.job.checkpoint
    assert ckpt is not None and ckpt.token_ids == [] and ckpt.text_tokens is not None  # no invented token ids
    held = ckpt.text_tokens
    assert held >= 10 and ckpt.text == "".join(tokens(RECORDED)[:held]) and ckpt.streamed_tokens == held
    assert done.text == RECORDED and done.finish_reason == "stop"
    assert done.usage.completion_tokens == count_tokens(RECORDED) and done.usage.prompt_tokens == PROMPT_TOKENS
    usage = await _usage(js, unique, "long")
    assert "".join(d.text for d in deltas if d.offset >= held) == "".join(tokens(RECORDED)[held:])
    if continue_from_text:
        # The server continued the checkpoint's text (prefilling prompt + that text again: billed as re-prefill).
        assert done.resumed_tokens == held and server.counts["continued"] == 1
        assert usage.recomputed_prompt_tokens == PROMPT_TOKENS + held
        assert [d.offset for d in deltas] == list(range(len(deltas)))  # one stream, no token twice, none missing
    else:
        assert done.resumed_tokens == 0 and server.counts["continued"] == 0 and usage.recomputed_prompt_tokens == 0
        assert [d.offset for d in deltas].count(0) == 2  # the answer started over, so did its stream
    assert deltas[-1].final and sum(d.tokens for d in deltas if d.offset >= held) == count_tokens(RECORDED) - held


async def test_a_job_waits_out_an_engine_server_that_is_down(
    js: JetStreamContext, start_worker: Any, unique: str, recordings: Recordings
) -> None:
    port = free_port()
    worker = await start_worker(f"http://127.0.0.1:{port}/v1", engine_retries=0, max_deliver=50)
    await publish(js, subjects.jobs(unique), _job(unique, "waits"), msg_id=f"{unique}-waits")
    spec = pool_queue(worker.settings)
    while (await js.consumer_info(spec.stream, spec.durable)).num_redelivered < 1:
        await asyncio.sleep(0.05)  # refused, nak'd, redelivered: not acked, not dead-lettered
    async with RecordingServer(recordings, _catalog(unique)).serving(port=port):
        done = await _completion(js, unique, "waits")
    assert done.text == RECORDED
    info = await js.consumer_info(spec.stream, spec.durable)
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_a_server_that_stays_down_fails_the_job_after_its_deliveries_with_why(
    nc: Nats, js: JetStreamContext, start_worker: Any, unique: str
) -> None:
    await start_worker(f"http://127.0.0.1:{free_port()}/v1", engine_retries=0, max_deliver=2)
    await publish(js, subjects.jobs(unique), _job(unique, "down"), msg_id=f"{unique}-down")
    result = await Client(nc).result(unique, "down", timeout=30)
    assert result.error is not None and result.error.code == ErrorCode.MAX_DELIVERIES_EXCEEDED
    assert "EngineUnavailable" in result.error.message and "ConnectError" in result.error.message


@pytest.mark.parametrize(
    ("model", "code", "said"),
    [(MODEL, ErrorCode.PROMPT_TOO_LONG, "maximum context length"), ("no-such-model", ErrorCode.ENGINE_ERROR, "404")],
)
async def test_a_server_refusal_is_a_typed_error_to_the_caller(
    nc: Nats,
    js: JetStreamContext,
    start_worker: Any,
    unique: str,
    recordings: Recordings,
    model: str,
    code: ErrorCode,
    said: str,
) -> None:
    server = RecordingServer(recordings, _catalog(unique), context_tokens=200)
    async with server.serving() as base_url:
        await start_worker(base_url, served_model_name=model)
        await publish(js, subjects.jobs(unique), _job(unique, "refused", max_tokens=500), msg_id=f"{unique}-refused")
        result = await Client(nc).result(unique, "refused", timeout=30)
    assert result.error is not None and result.error.code == code and said in result.error.message
    letter = await first_stored(
        js, subjects.dead_letters("worker"), DeadLetter, lambda d: d.request_id == "refused" and d.tenant == unique
    )
    assert letter.code == code


async def test_stop_closes_the_http_client_build_opened_and_not_the_connection(nc: Nats, unique: str) -> None:
    settings = WorkerSettings(pool=unique, model=MODEL, engine_url="http://127.0.0.1:1/v1", ack_wait_s=5, heartbeat_s=1)
    worker = await build(settings, nc=nc)
    await worker.start()
    http = worker.engine.http  # type: ignore[attr-defined]
    assert not http.is_closed
    await worker.stop()
    assert http.is_closed and nc.is_connected
