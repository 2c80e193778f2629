"""What the worker owns and how the shared consumer guards it: ``stop()`` closes exactly what ``build`` opened,
malformed jobs on either queue are dead-lettered, a job the engine keeps failing on is given up with its error."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from nats.aio.client import Client as Nats
from nats.js import JetStreamContext

from costwise.client import Client
from costwise.contracts import (
    ChatMessage,
    Checkpoint,
    DeadLetter,
    ErrorCode,
    InferenceRequest,
    Job,
    SamplingParams,
    subjects,
)
from costwise.messaging import MSG_ID, publish
from costwise.testing import first_stored
from costwise.worker import Engine, WorkerSettings, build
from costwise.worker.engine import Generation, Progress

MAX_LEN = 2048  # conftest.TINY_MAX_MODEL_LEN


class FakeEngine:
    """Stands in for vLLM where the test is about the worker around it: records warm-up and shutdown, and
    fails every generation."""

    model_name = "fake"
    max_model_len = MAX_LEN

    def __init__(self) -> None:
        self.warmed = self.shut_down = False

    async def warm_up(self) -> None:
        self.warmed = True

    def prepare(self, messages: list[ChatMessage]) -> list[int]:
        return [1, 2, 3]

    def prompt_tokens(self, prompt: list[int]) -> int:
        return len(prompt)

    def resume(self, checkpoint: Checkpoint | None) -> Progress:
        return Progress.from_checkpoint(checkpoint)

    def text(self, progress: Progress, tokens: int | None = None) -> str:
        return ""

    def tail(self, progress: Progress, tokens: int) -> str:
        return ""

    async def generate(
        self,
        prompt: list[int],
        params: SamplingParams,
        progress: Progress,
        on_step: Any = None,
        *,
        logprobs: bool = True,
    ) -> Generation:
        raise RuntimeError("engine died")

    def shutdown(self) -> None:
        self.shut_down = True


def _settings(pool: str, **kw: Any) -> WorkerSettings:
    return WorkerSettings(pool=pool, max_model_len=MAX_LEN, ack_wait_s=5, heartbeat_s=1, grace_s=0, **kw)


def _job(pool: str, rid: str) -> Job:
    req = InferenceRequest(request_id=rid, tenant=pool, messages=[ChatMessage(role="user", content="hello")])
    return Job(job_id=rid, request=req, pool=pool)


async def _dead_letter(js: JetStreamContext, request_id: str) -> DeadLetter:
    return await first_stored(js, subjects.dead_letters("worker"), DeadLetter, lambda d: d.request_id == request_id)


async def test_stop_closes_what_build_opened_and_nothing_injected(
    nats_url: str, nc: Nats, engine: Any, unique: str
) -> None:
    injected = await build(_settings(unique, nats_url=nats_url), nc=nc, engine=engine)
    await injected.start()
    await injected.stop()
    assert nc.is_connected
    own = await build(_settings(unique, nats_url=nats_url), engine=engine)
    await own.start()
    await own.stop()
    assert own.nc.is_closed
    progress = Progress()  # the injected engine still generates: neither worker shut it down
    await engine.generate(
        engine.prompt_ids([ChatMessage(role="user", content="hi")]), SamplingParams(max_tokens=2), progress
    )
    assert len(progress.token_ids) == 2


async def test_an_engine_build_loaded_is_shut_down_by_stop(
    nc: Nats, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = FakeEngine()
    monkeypatch.setattr(Engine, "load", lambda settings: loaded)
    worker = await build(_settings(unique), nc=nc)
    assert loaded.warmed and not loaded.shut_down
    await worker.start()
    await worker.stop()
    assert loaded.shut_down and nc.is_connected


async def test_a_malformed_job_on_the_workers_own_queue_is_dead_lettered_and_the_caller_told(
    nc: Nats, js: JetStreamContext, engine: Any, unique: str
) -> None:
    worker = await build(_settings(unique), nc=nc, engine=engine)
    await worker.start()
    try:
        doc = msgspec.json.decode(msgspec.json.encode(_job(unique, "bad")))
        doc["request"]["sampling"]["max_tokens"] = -5
        own = subjects.worker_own_jobs(unique, worker.settings.worker_id)
        await js.publish(own, msgspec.json.encode(doc), headers={MSG_ID: f"{unique}-bad"})
        result = await Client(nc).result(unique, "bad", timeout=30)
        # By subject too: the dead-letter stream is the session's, and other tests' jobs are called "bad" as well.
        letter = await first_stored(
            js, subjects.dead_letters("worker"), DeadLetter, lambda d: d.request_id == "bad" and d.subject == own
        )
    finally:
        await worker.stop()
    assert result.error is not None and result.error.code == ErrorCode.MALFORMED_MESSAGE
    assert "max_tokens" in result.error.message
    assert letter.code == ErrorCode.MALFORMED_MESSAGE and letter.subject == own


async def test_a_job_the_engine_keeps_failing_on_is_given_up_with_the_last_error(
    nc: Nats, js: JetStreamContext, unique: str
) -> None:
    worker = await build(_settings(unique, max_deliver=2), nc=nc, engine=FakeEngine())
    await worker.start()
    try:
        await publish(js, subjects.jobs(unique), _job(unique, "doomed"), msg_id=f"{unique}-doomed")
        result = await Client(nc).result(unique, "doomed", timeout=30)
        letter = await _dead_letter(js, "doomed")
    finally:
        await worker.stop()
    assert result.error is not None and result.error.code == ErrorCode.MAX_DELIVERIES_EXCEEDED
    assert "RuntimeError: engine died" in result.error.message
    assert letter.code == ErrorCode.MAX_DELIVERIES_EXCEEDED and letter.num_delivered == 2
