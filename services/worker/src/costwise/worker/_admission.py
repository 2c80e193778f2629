"""Whether a worker takes a job at all: pure checks of the job against this worker, its engine and the time.

A refused job is dead-lettered and its caller told at once: a retry would be refused the same way.
"""

from __future__ import annotations

from costwise.contracts import ErrorCode, Job
from costwise.messaging import Refusal

__all__ = ["admission"]


def admission(
    job: Job, *, pool: str, now_ms: int, prompt_tokens: int | None, model: str, max_model_len: int | None
) -> Refusal | None:
    """Why this worker (of ``pool``, running ``model``) must not generate ``job`` now, or ``None`` if it may.

    The length check needs both counts; an engine server counts the prompt itself (and answers 400)."""
    if job.pool != pool:
        return Refusal(ErrorCode.UNKNOWN_POOL, f"job for pool {job.pool!r} reached pool {pool!r}")
    deadline_ms = job.request.deadline_ms
    if deadline_ms and now_ms > deadline_ms:  # nobody waits for this answer any more: spend no GPU time on it
        why = f"the deadline passed {now_ms - deadline_ms} ms before a worker could start the job"
        return Refusal(ErrorCode.DEADLINE_EXCEEDED, why)
    if prompt_tokens is None or max_model_len is None:
        return None
    need = prompt_tokens + job.request.sampling.max_tokens
    if need > max_model_len:
        why = (
            f"prompt has {prompt_tokens} tokens + max_tokens {job.request.sampling.max_tokens}"
            f" = {need}; {model} takes {max_model_len}"
        )
        return Refusal(ErrorCode.PROMPT_TOO_LONG, why)
    return None
