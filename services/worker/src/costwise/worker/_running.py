"""One job generating inside a worker, and how its trace shows another try of the same job."""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.trace import Link, get_current_span

from costwise.contracts import Job

from ._progress import Progress
from ._stream import DeltaPublisher

__all__ = ["Running", "retry_links"]


@dataclass
class Running:
    """A job in the engine: its progress is what a hand-back checkpoints (and what tests watch)."""

    job: Job
    progress: Progress
    deltas: DeltaPublisher | None = None
    """Set when the job streams its tokens (``None``: nothing is published per step)."""


def retry_links(job: Job, delivered: int) -> list[Link]:
    """A redelivered or resumed job links to the span it was delivered in, marked as another try of that job:
    a redelivery after a crash is otherwise a mere sibling of the try that died."""
    if delivered <= 1 and job.checkpoint is None:
        return []
    # The consumer's span, which continues the publisher's (it is the publisher's when nothing is recorded here).
    delivered_in = get_current_span().get_span_context()
    return [Link(delivered_in, {"messaging.message.delivery_count": delivered, "costwise.retry": True})]
