"""What a finished job becomes for the router: its completion (``costwise.messaging.publish_completion`` stores it
with its usage event before the ack)."""

from __future__ import annotations

from costwise.contracts import Completion, EngineTimings, Job, Usage

from ._progress import Generation, Progress

__all__ = ["completion_of"]


def completion_of(
    job: Job, gen: Generation, progress: Progress, *, worker_id: str, spot: bool, model: str, now_ms: int
) -> Completion:
    usage = Usage(
        prompt_tokens=gen.prompt_tokens,
        completion_tokens=gen.completion_tokens,
        cached_prompt_tokens=gen.cached_prompt_tokens,
    )
    return Completion(
        job=job,
        worker_id=worker_id,
        spot=spot,
        model=model,
        text=gen.text,
        finish_reason=gen.finish_reason,  # type: ignore[arg-type]
        usage=usage,
        logprobs=progress.summary(),
        timings=EngineTimings(first_token_s=progress.first_token_s or 0.0, engine_s=gen.engine_s),
        resumed_tokens=progress.resumed,
        completed_ms=now_ms,
    )
