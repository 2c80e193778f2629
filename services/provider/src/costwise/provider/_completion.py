"""What an answered (or failed) call becomes for the router: its completion (``costwise.messaging.publish_completion``
stores it, with a usage event when the provider billed the call, before the ack)."""

from __future__ import annotations

from costwise.catalog import Provider
from costwise.contracts import Completion, EngineTimings, ErrorInfo, Job, Usage

from ._openai import Answer, Failure

__all__ = ["completion_of"]


def completion_of(
    job: Job, outcome: Answer | Failure, *, provider: Provider, worker_id: str, elapsed_s: float, now_ms: int
) -> Completion:
    """A failure is a completion too: the router decides what comes next (another backend, or an error result)."""
    if isinstance(outcome, Failure):
        return Completion(
            job=job,
            worker_id=worker_id,
            spot=False,
            model=provider.model,
            text="",
            finish_reason="abort",
            usage=Usage(),
            completed_ms=now_ms,
            error=ErrorInfo(code=outcome.code, message=f"{provider.name}: {outcome.message}"),
        )
    return Completion(
        job=job,
        worker_id=worker_id,
        spot=False,
        model=outcome.model,
        text=outcome.text,
        finish_reason=outcome.finish_reason,  # type: ignore[arg-type]
        usage=outcome.usage,
        logprobs=outcome.logprobs,
        timings=EngineTimings(engine_s=elapsed_s),
        completed_ms=now_ms,
    )
