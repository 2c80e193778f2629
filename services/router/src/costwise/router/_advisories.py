"""A job that used up its deliveries (its workers kept dying) becomes a dead letter and leaves the queue."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from costwise.contracts import ErrorCode, MaxDeliveriesAdvisory
from costwise.messaging import file_dead_letter

__all__ = ["dead_letter_job"]


async def dead_letter_job(js: JetStreamContext, advisory: MaxDeliveriesAdvisory, *, service: str) -> None:
    try:
        job = await js.get_msg(advisory.stream, advisory.stream_seq)
    except NotFoundError:
        return  # already answered and acked, or handled by an earlier delivery of this advisory
    if job.data is None or job.subject is None:
        return
    why = f"no worker finished the job in {advisory.deliveries} deliveries (consumer {advisory.consumer})"
    await file_dead_letter(
        js,
        service=service,
        subject=job.subject,
        data=job.data,
        code=ErrorCode.MAX_DELIVERIES_EXCEEDED,
        reason=why,
        num_delivered=advisory.deliveries,
        stream_seq=advisory.stream_seq,
    )
    # A work-queue message that no consumer will deliver again would sit there forever.
    await js.delete_msg(advisory.stream, advisory.stream_seq)
