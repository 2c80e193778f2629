"""The worker's admission checks, without NATS or an engine: pure functions of the job, the worker and the time."""

from __future__ import annotations

from typing import Any

from costwise.contracts import ChatMessage, ErrorCode, InferenceRequest, Job, SamplingParams, now_ms
from costwise.worker._admission import admission

NOW_MS = now_ms(lambda: 1_700_000_000.0)  # an injected clock


def _job(pool: str = "p", *, deadline_ms: int | None = None, max_tokens: int = 16) -> Job:
    req = InferenceRequest(
        request_id="r",
        tenant="t",
        messages=[ChatMessage(role="user", content="hi")],
        sampling=SamplingParams(max_tokens=max_tokens),
        deadline_ms=deadline_ms,
    )
    return Job(job_id="r", request=req, pool=pool)


def _admit(job: Job, **kw: Any) -> Any:
    args = {"pool": "p", "now_ms": NOW_MS, "prompt_tokens": 10, "model": "tiny", "max_model_len": 2048} | kw
    return admission(job, **args)


def test_a_job_that_fits_is_admitted() -> None:
    assert _admit(_job()) is None
    assert _admit(_job(deadline_ms=NOW_MS)) is None  # due now, not yet late
    assert _admit(_job(max_tokens=2038)) is None  # exactly the model's length


def test_a_job_of_another_pool_is_refused() -> None:
    refusal = _admit(_job("q"))
    assert refusal.code is ErrorCode.UNKNOWN_POOL and "'q'" in refusal.reason and "'p'" in refusal.reason


def test_a_job_past_its_deadline_is_refused_saying_by_how_much() -> None:
    refusal = _admit(_job(deadline_ms=NOW_MS - 250))
    assert refusal.code is ErrorCode.DEADLINE_EXCEEDED and "250 ms" in refusal.reason


def test_a_prompt_that_leaves_no_room_for_max_tokens_is_refused() -> None:
    refusal = _admit(_job(max_tokens=100), prompt_tokens=2000)
    assert refusal.code is ErrorCode.PROMPT_TOO_LONG
    assert "2000 tokens + max_tokens 100 = 2100" in refusal.reason and "tiny takes 2048" in refusal.reason


def test_a_misrouted_job_is_refused_as_such_before_it_is_found_late_or_long() -> None:
    assert _admit(_job("q", deadline_ms=1), prompt_tokens=5000).code is ErrorCode.UNKNOWN_POOL
    assert _admit(_job(deadline_ms=1), prompt_tokens=5000).code is ErrorCode.DEADLINE_EXCEEDED
