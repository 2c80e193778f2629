"""Streamed provider jobs on a real nats-server against a local server streaming OpenAI chunks (``conftest``):
deltas as the provider sends them, a retry after a broken stream that continues it, and a typed error when the
stream cannot be continued."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
from nats.aio.client import Client as Nats
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from costwise.contracts import (
    ChatMessage,
    Completion,
    ErrorCode,
    InferenceRequest,
    Job,
    StreamDelta,
    Usage,
    UsageEvent,
    decode,
    subjects,
)
from costwise.messaging import publish
from costwise.openai_wire import estimated_usage
from costwise.provider import ProviderSettings, ProviderWorker, build
from costwise.testing import first_stored

from .conftest import StreamingProvider, provider_catalog

ASKED = [ChatMessage(role="user", content="capital of France?")]


class _Deltas:
    """Every delta of one request, as a client subscribed before publishing would see them."""

    def __init__(self) -> None:
        self.got: list[StreamDelta] = []

    async def on(self, msg: Msg) -> None:
        self.got.append(decode(msg.data, StreamDelta))

    @property
    def text(self) -> str:
        return "".join(d.text for d in self.got)

    def assert_contiguous(self) -> None:
        """Each delta starts where the one before ended: a reader sees no repeat and no gap."""
        ends = [0]
        for d in self.got:
            assert d.offset == ends[-1], [(x.offset, x.tokens, x.text) for x in self.got]
            ends.append(d.offset + d.tokens)


@pytest_asyncio.fixture
async def start(
    nats_url: str, nc: Nats, unique: str, streaming: StreamingProvider
) -> AsyncIterator[Callable[..., Awaitable[ProviderWorker]]]:
    """Start a provider worker for this test's backend (``max_retries``: tries after the first)."""
    started: list[ProviderWorker] = []

    async def start(max_retries: int = 1) -> ProviderWorker:
        settings = ProviderSettings(nats_url=nats_url, backend=unique, ack_wait_s=5, heartbeat_s=1, grace_s=0)
        worker = await build(
            settings, nc=nc, catalog=provider_catalog(unique, streaming.url, timeout_s=2, max_retries=max_retries)
        )
        await worker.start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        await worker.stop()


async def _streamed_job(nc: Nats, js: JetStreamContext, pool: str, rid: str, **kw: Any) -> _Deltas:
    """Subscribe to the request's deltas, then publish its job (a delta published before that is lost)."""
    deltas = _Deltas()
    await nc.subscribe(subjects.deltas(pool, rid), cb=deltas.on)
    stage = kw.pop("stage", "direct")
    req = InferenceRequest(request_id=rid, tenant=pool, messages=ASKED, stream=True, **kw)
    job = Job(job_id=rid, request=req, pool=pool, stage=stage)
    await publish(js, subjects.jobs(pool), job, msg_id=subjects.dedup_id(pool, rid))
    return deltas


async def _completion(js: JetStreamContext, pool: str) -> Completion:
    sub = await js.subscribe(subjects.completions(pool), ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    try:
        return decode((await sub.next_msg(timeout=15)).data, Completion)
    finally:
        await sub.unsubscribe()


async def _until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


async def test_deltas_arrive_before_the_completion_and_add_up_to_the_billed_answer(
    nc: Nats, js: JetStreamContext, start: Any, streaming: StreamingProvider, unique: str
) -> None:
    streaming.hold = asyncio.Event()  # the provider keeps its finish chunk back: no completion can exist yet
    await start()
    answer = "".join(streaming.words)
    deltas = await _streamed_job(nc, js, unique, "s1", api_key_id="k1")
    await _until(lambda: deltas.text == answer)
    assert not any(d.final for d in deltas.got) and len(deltas.got) == len(streaming.words)  # a delta per chunk
    streaming.hold.set()
    done = await _completion(js, unique)
    await _until(lambda: deltas.got[-1].final)
    assert done.error is None and done.text == deltas.text == answer and done.finish_reason == "stop"
    assert done.usage == Usage(prompt_tokens=streaming.prompt_tokens, completion_tokens=len(streaming.words))
    deltas.assert_contiguous()
    assert sum(d.tokens for d in deltas.got) == done.usage.completion_tokens  # streamed tokens = billed tokens
    assert [d.final for d in deltas.got].count(True) == 1 and deltas.got[-1].finish_reason == "stop"
    assert done.logprobs is not None and done.logprobs.count == len(streaming.words)
    body = streaming.bodies[-1]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    event = await first_stored(js, subjects.usage(unique), UsageEvent, lambda e: e.job_id == "s1")
    assert event.usage == done.usage and event.api_key_id == "k1"


@pytest.mark.parametrize("how", ["drop", "error_event"])
async def test_a_stream_broken_once_is_retried_and_continued_without_repeating_text(
    nc: Nats, js: JetStreamContext, start: Any, streaming: StreamingProvider, unique: str, how: Any
) -> None:
    streaming.plans = [how]  # the first call breaks after 3 words (cut connection / error event); the retry is whole
    await start()
    answer = "".join(streaming.words)
    deltas = await _streamed_job(nc, js, unique, "b1")
    done = await _completion(js, unique)
    await _until(lambda: bool(deltas.got) and deltas.got[-1].final)
    assert len(streaming.bodies) == 2 and all(b["stream"] for b in streaming.bodies)
    assert done.error is None and done.text == answer
    assert deltas.text == answer  # "The capital of" once: the retry's copy of it was dropped
    deltas.assert_contiguous()
    assert sum(d.tokens for d in deltas.got) == done.usage.completion_tokens == len(streaming.words)


async def test_a_stream_that_keeps_breaking_ends_as_a_typed_error_and_never_claims_a_finish(
    nc: Nats, js: JetStreamContext, start: Any, streaming: StreamingProvider, unique: str
) -> None:
    streaming.default = "drop"
    await start()
    deltas = await _streamed_job(nc, js, unique, "d1")
    done = await _completion(js, unique)
    assert done.error is not None and done.error.code == ErrorCode.PROVIDER_ERROR and done.text == ""
    assert "2 tries failed" in done.error.message and len(streaming.bodies) == 2
    await _until(lambda: bool(deltas.got) and deltas.got[-1].error is not None)
    assert deltas.text == "".join(streaming.words[: streaming.cut_after])  # sent once, not once per try
    assert not any(d.final or d.finish_reason for d in deltas.got)
    assert deltas.got[-1].error == done.error
    deltas.assert_contiguous()


async def test_a_retry_whose_answer_differs_from_what_was_sent_fails_at_once(
    nc: Nats, js: JetStreamContext, start: Any, streaming: StreamingProvider, unique: str
) -> None:
    streaming.plans = ["drop"]
    streaming.answers = [streaming.words, ["The", " capital", " city", " of", " France", " is", " Paris."]]
    await start(max_retries=3)
    deltas = await _streamed_job(nc, js, unique, "v1")
    done = await _completion(js, unique)
    assert done.error is not None and done.error.code == ErrorCode.PROVIDER_ERROR
    assert "could not be continued" in done.error.message and len(streaming.bodies) == 2  # no third try
    await _until(lambda: bool(deltas.got) and deltas.got[-1].error is not None)
    assert deltas.text == "The capital of" and not any(d.final for d in deltas.got)


async def test_retries_stop_at_the_deadline_with_a_deadline_error(
    nc: Nats, js: JetStreamContext, start: Any, streaming: StreamingProvider, unique: str
) -> None:
    streaming.default = "drop"
    await start(max_retries=10)
    deltas = await _streamed_job(nc, js, unique, "t1", deadline_ms=int(time.time() * 1000) + 1000)
    done = await _completion(js, unique)
    assert done.error is not None and done.error.code == ErrorCode.DEADLINE_EXCEEDED
    assert 1 < len(streaming.bodies) < 11
    await _until(lambda: bool(deltas.got) and deltas.got[-1].error is not None)
    assert deltas.text == "The capital of" and not any(d.final for d in deltas.got)


async def test_without_a_usage_chunk_the_streamed_tokens_are_billed_and_the_prompt_estimated(
    nc: Nats, js: JetStreamContext, start: Any, streaming: StreamingProvider, unique: str
) -> None:
    streaming.plans = ["no_usage"]
    await start()
    deltas = await _streamed_job(nc, js, unique, "u1")
    done = await _completion(js, unique)
    await _until(lambda: bool(deltas.got) and deltas.got[-1].final)
    assert done.error is None and done.usage == estimated_usage(ASKED, len(streaming.words))
    assert done.usage.prompt_tokens > 0 and sum(d.tokens for d in deltas.got) == done.usage.completion_tokens


async def test_a_cascades_small_stage_does_not_stream(
    nc: Nats, js: JetStreamContext, start: Any, streaming: StreamingProvider, unique: str
) -> None:
    await start()
    deltas = await _streamed_job(nc, js, unique, "c1", stage="cascade_small")
    done = await _completion(js, unique)
    assert done.error is None and done.text == "".join(streaming.words)
    assert "stream" not in streaming.bodies[-1] and deltas.got == []


@pytest.mark.parametrize("retry", ["same_answer", "sampled_answer"])
async def test_a_worker_stopped_mid_stream_hands_the_stream_on_to_the_next_worker(
    nc: Nats, js: JetStreamContext, start: Any, streaming: StreamingProvider, unique: str, retry: str
) -> None:
    streaming.hold = asyncio.Event()  # every call keeps its finish chunk back: the first worker stops mid-answer
    first = await start()
    answer = "".join(streaming.words)
    deltas = await _streamed_job(nc, js, unique, "h1")
    await _until(lambda: deltas.text == answer)
    await first.stop()  # no grace: the call is cancelled and the job handed back with what its stream carried
    if retry == "sampled_answer":
        streaming.answers = [["The", " capital", " of", " France", " is", " lovely."]]
    await start()
    await _until(lambda: len(streaming.bodies) == 2)
    streaming.hold.set()
    done = await _completion(js, unique)
    await _until(lambda: bool(deltas.got) and (deltas.got[-1].final or deltas.got[-1].error is not None))
    assert deltas.text == answer  # what the first worker sent, once: the second one sent only what came after
    deltas.assert_contiguous()
    if retry == "same_answer":
        assert done.error is None and done.text == answer and [d.final for d in deltas.got].count(True) == 1
        assert sum(d.tokens for d in deltas.got) == done.usage.completion_tokens
    else:  # no try can take back text the client has: an error event, never a spliced answer
        assert done.error is not None and done.error.code == ErrorCode.PROVIDER_ERROR
        assert not any(d.final for d in deltas.got) and deltas.got[-1].error == done.error
