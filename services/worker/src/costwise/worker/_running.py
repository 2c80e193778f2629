"""One job inside a worker: its message, its progress, and how its trace continues on another try."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from nats.aio.msg import Msg
from opentelemetry.context import Context
from opentelemetry.trace import Link, get_current_span

from costwise.contracts import Job

from .engine import Progress

__all__ = ["Running", "retry_links"]


@dataclass
class Running:
    msg: Msg
    job: Job
    progress: Progress
    task: asyncio.Task[None] | None = None
    settled: bool = False
    """Acked or terminated: nothing left to hand back."""
    trace: Context | None = None
    """This attempt's span: a handed-back job continues from it, so the trace shows attempt after attempt."""


def retry_links(run: Running, ctx: Context) -> list[Link]:
    """A redelivered or resumed job links to the span that published it, marked as another try of that job."""
    delivered = run.msg.metadata.num_delivered
    if delivered <= 1 and run.job.checkpoint is None:
        return []
    published = get_current_span(ctx).get_span_context()
    return [Link(published, {"messaging.message.delivery_count": delivered, "costwise.retry": True})]
