"""What every worker (GPU or provider) does with a finished job: store its completion and usage, then ack."""

from __future__ import annotations

import asyncio

from nats.js import JetStreamContext

from costwise.contracts import Completion, UsageEvent, subjects

from ._current import ack_current
from ._publish import publish

__all__ = ["publish_completion", "usage_event"]


def usage_event(done: Completion, *, recomputed_prompt_tokens: int = 0) -> UsageEvent:
    """What billing charges for ``done``: its usage, told apart by job id (a repeat of the job is the same event)."""
    job = done.job
    return UsageEvent(
        request_id=job.request.request_id,
        job_id=job.job_id,
        tenant=job.request.tenant,
        pool=job.pool,
        worker_id=done.worker_id,
        spot=done.spot,
        model=done.model,
        usage=done.usage,
        engine_s=done.timings.engine_s,
        ts_ms=done.completed_ms,
        stage=job.stage,
        attempt=job.attempt,
        api_key_id=job.request.api_key_id,
        recomputed_prompt_tokens=recomputed_prompt_tokens,
    )


async def publish_completion(js: JetStreamContext, done: Completion, usage: UsageEvent | None) -> None:
    """Store ``done`` (and ``usage``, when the job is billed), then ack the job being handled.

    Ack only after both are stored: a crash before the ack redelivers the job, and the job-id msg-ids make
    the repeats no-ops. The two PubAcks are awaited together (one round trip, not two).
    """
    job, tenant = done.job, done.job.request.tenant
    stored = [publish(js, subjects.completions(job.pool), done, msg_id=subjects.dedup_id(tenant, job.job_id))]
    if usage is not None:
        usage_id = subjects.dedup_id(tenant, job.job_id, "usage")
        stored.append(publish(js, subjects.usage(tenant), usage, msg_id=usage_id))
    await asyncio.gather(*stored)
    await ack_current()
