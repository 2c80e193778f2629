"""A streamed job's deltas on real vLLM: they add up to the completion, and a job handed back on a spot notice is
continued by the resuming worker at its checkpoint's offset, no token twice, none missing."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import pytest
import pytest_asyncio
from nats.aio.client import Client as Nats
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from costwise.contracts import (
    ChatMessage,
    Completion,
    InferenceRequest,
    Job,
    SamplingParams,
    StreamDelta,
    decode,
    subjects,
)
from costwise.messaging import publish
from costwise.testing import first_stored
from costwise.worker import Worker, WorkerSettings, build
from costwise.worker._stream import DeltaPublisher
from costwise.worker.engine import Progress


@pytest_asyncio.fixture
async def start_worker(nc: Nats, engine: Any, unique: str) -> AsyncIterator[Callable[..., Any]]:
    """Workers of a pool unique to this test, on the session's engine."""
    workers: list[Worker] = []

    async def start() -> Worker:
        settings = WorkerSettings(pool=unique, max_model_len=2048, ack_wait_s=5, heartbeat_s=1)
        worker = await build(settings, nc=nc, engine=engine)
        await worker.start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        await worker.drain(0)


def _job(pool: str, rid: str, *, stream: bool, max_tokens: int, stage: str = "direct") -> Job:
    req = InferenceRequest(
        request_id=rid,
        tenant=pool,
        messages=[ChatMessage(role="user", content="tell me about streams")],
        sampling=SamplingParams(max_tokens=max_tokens, temperature=0.0),
        stream=stream,
    )
    return Job(job_id=rid, request=req, pool=pool, stage=stage)  # type: ignore[arg-type]


async def _collect(nc: Nats, tenant: str, rid: str) -> tuple[list[StreamDelta], Any]:
    got: list[StreamDelta] = []

    async def on(msg: Msg) -> None:
        got.append(decode(msg.data, StreamDelta))

    return got, await nc.subscribe(subjects.deltas(tenant, rid), cb=on)


async def _completion(js: JetStreamContext, pool: str, job_id: str) -> Completion:
    return await first_stored(js, subjects.completions(pool), Completion, lambda c: c.job.job_id == job_id, timeout=120)


def _contiguous(deltas: list[StreamDelta]) -> bool:
    offsets = [d.offset for d in deltas]
    ends = [d.offset + d.tokens for d in deltas]
    return offsets[0] == 0 and offsets[1:] == ends[:-1]


async def test_a_handed_back_stream_continues_at_the_checkpoint(
    nc: Nats, js: JetStreamContext, start_worker: Any, unique: str
) -> None:
    deltas, sub = await _collect(nc, unique, "long")
    first = await start_worker()
    await publish(js, subjects.jobs(unique), _job(unique, "long", stream=True, max_tokens=600), msg_id=f"{unique}-long")
    while not first.running or len(next(iter(first.running.values())).progress.token_ids) < 20:
        await asyncio.sleep(0.05)
    await first.drain(0)  # spot notice: checkpoint and hand back at once
    await start_worker()
    done = await _completion(js, unique, "long")
    await publish(
        js, subjects.jobs(unique), _job(unique, "plain", stream=False, max_tokens=600), msg_id=f"{unique}-plain"
    )
    plain = await _completion(js, unique, "plain")
    await nc.flush()
    await sub.unsubscribe()
    assert done.job.checkpoint is not None and done.resumed_tokens >= 20
    # The preempted worker streamed every checkpointed token (the resuming one only publishes from the checkpoint
    # on, so these came before the generation ended), the resuming worker continued at exactly that offset, and
    # the stream has no seams: no offset twice, none skipped.
    resumed_at = done.job.checkpoint.streamed_tokens
    # All of the checkpoint, unless its last token ended inside a character (then the resuming worker sends it).
    assert resumed_at is not None and len(done.job.checkpoint.token_ids) - 4 <= resumed_at <= len(
        done.job.checkpoint.token_ids
    )
    assert [d.offset for d in deltas if d.offset < resumed_at] and resumed_at in [d.offset for d in deltas]
    assert _contiguous(deltas) and deltas[-1].final and not any(d.final for d in deltas[:-1])
    assert sum(d.tokens for d in deltas) == done.usage.completion_tokens
    assert "".join(d.text for d in deltas) == done.text == plain.text  # and equal to an uninterrupted greedy run
    assert deltas[-1].finish_reason == done.finish_reason and deltas[-1].model == done.model


async def test_no_deltas_without_stream_or_on_a_cascades_small_stage(
    nc: Nats, js: JetStreamContext, start_worker: Any, unique: str
) -> None:
    plain, plain_sub = await _collect(nc, unique, "plain")
    small, small_sub = await _collect(nc, unique, "small")
    streamed, streamed_sub = await _collect(nc, unique, "streamed")
    await start_worker()
    jobs = [
        _job(unique, "plain", stream=False, max_tokens=8),
        _job(unique, "small", stream=True, max_tokens=8, stage="cascade_small"),
        _job(unique, "streamed", stream=True, max_tokens=8),
    ]
    for job in jobs:
        await publish(js, subjects.jobs(unique), job, msg_id=f"{unique}-{job.job_id}")
    for job in jobs:
        await _completion(js, unique, job.job_id)
    await nc.flush()  # deltas precede their completion on the worker's connection: any would be here by now
    for sub in (plain_sub, small_sub, streamed_sub):
        await sub.unsubscribe()
    assert plain == [] and small == []
    assert _contiguous(streamed) and streamed[-1].final


async def test_a_cancel_that_nats_swallows_while_publishing_still_stops_the_generation(unique: str) -> None:
    class Swallowing:  # as nats-py's publish does when the cancel lands in its flush
        async def publish(self, subject: str, data: bytes) -> None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(60)

    progress = Progress(token_ids=[1, 2, 3])
    job = _job(unique, "swallowed", stream=True, max_tokens=8)
    publisher = DeltaPublisher(
        Swallowing(),
        job,
        Progress(),
        text=lambda p, n: "x" * p.tokens,
        tail=lambda p, n: "x" * (p.tokens - n),
        model="m",
    )  # type: ignore[arg-type]
    step = asyncio.create_task(publisher.step(progress))
    await asyncio.sleep(0.01)  # inside the publish
    step.cancel()
    with pytest.raises(asyncio.CancelledError):
        await step


def _decode(ids: list[int]) -> str:
    """Token 1 is "a"; tokens 2 + 3 are the two bytes of "é" (2 alone decodes to the replacement character)."""
    text = "".join({1: "a", 2: "\ufffd", 3: ""}[t] for t in ids)
    return text.replace("\ufffd", "é") if 3 in ids else text


def _text(progress: Progress, tokens: int | None) -> str:
    return _decode(progress.token_ids[:tokens])


def _tail(progress: Progress, tokens: int) -> str:
    return _text(progress, None)[len(_text(progress, tokens)) :]


class _Capture:
    def __init__(self) -> None:
        self.sent: list[StreamDelta] = []

    async def publish(self, subject: str, data: bytes) -> None:
        self.sent.append(decode(data, StreamDelta))


async def test_a_checkpoint_inside_a_character_is_continued_without_a_gap(unique: str) -> None:
    nc, job = _Capture(), _job(unique, "split", stream=True, max_tokens=8)
    first = DeltaPublisher(nc, job, Progress(), text=_text, tail=_tail, model="m")  # type: ignore[arg-type]
    await first.step(Progress(token_ids=[1]))
    await first.step(Progress(token_ids=[1, 2]))  # ends inside "é": waits
    await first.flush(Progress(token_ids=[1, 2]))  # the spot notice: still only what decodes whole
    assert [(d.offset, d.tokens, d.text) for d in nc.sent] == [(0, 1, "a")] and first.offset == 1
    ckpt = Progress(token_ids=[1, 2]).checkpoint(_decode([1, 2]), worker_id="gone")
    resumed_job = msgspec.structs.replace(job, checkpoint=msgspec.structs.replace(ckpt, streamed_tokens=first.offset))
    progress = Progress.from_checkpoint(resumed_job.checkpoint)
    resumed = DeltaPublisher(nc, resumed_job, progress, text=_text, tail=_tail, model="m")  # type: ignore[arg-type]
    progress.token_ids.extend([3, 1])
    await resumed.finish(progress, "stop")
    assert [(d.offset, d.tokens, d.text) for d in nc.sent[1:]] == [(1, 3, "éa")] and nc.sent[-1].final


def test_a_steps_tail_is_what_its_tokens_add_to_the_whole_answer(engine: Any) -> None:
    text = "Ça coûte 12,50 € — naïve café, 東京 and  two  spaces.\nNew line 🙂 done"
    progress = Progress(token_ids=engine.tokenizer.encode(text, add_special_tokens=False))
    whole = engine.text(progress)
    for start in range(len(progress.token_ids) + 1):
        head = engine.text(progress, start)
        assert head + engine.tail(progress, start) == whole or head.endswith("\ufffd"), start


async def test_a_streamed_steps_text_is_vllms_own_and_the_same_as_decoding_it_again(engine: Any) -> None:
    """The tiny random model's answer is full of characters split across tokens: the steps' texts (vLLM's
    detokenizer's) still add up to the answer, and each is what decoding the step's tokens again gives wherever
    neither end of the step splits a character (elsewhere the publisher waits and decodes a longer tail)."""
    prompt = engine.prepare([ChatMessage(role="user", content="tell me about streams")])
    progress, steps = Progress(), []

    async def on_step(progress: Progress) -> None:
        before, own = progress.step_text
        split = engine.text(progress, before).endswith("\ufffd")
        steps.append((own, engine.tail(dataclasses.replace(progress, step_text=None), before), split))

    await engine.generate(prompt, SamplingParams(max_tokens=300, temperature=0.0), progress, on_step, logprobs=False)
    assert "".join(own for own, _, _ in steps) == engine.text(progress) and len(steps) > 1
    compared = [(own, again) for own, again, split in steps if not split and not again.endswith("\ufffd")]
    assert len(compared) > len(steps) // 2 and all(own == again for own, again in compared)
