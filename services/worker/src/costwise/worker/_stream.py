"""A streamed job's tokens as :class:`StreamDelta` messages, published on core NATS as the engine produces them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from nats.aio.client import Client

from costwise.contracts import Job, StreamDelta, encode, subjects

from ._progress import Progress

__all__ = ["DeltaPublisher"]

# What a detokenizer gives for a character whose bytes are split across tokens: its rest comes with the next token.
_PARTIAL = "\ufffd"


class DeltaPublisher:
    """Publishes what each engine step added to one job's answer (one message per step, however many tokens).

    Offsets continue from where the checkpoint says the stream got to, so a resumed job continues the stream its
    first worker began, and a checkpoint that ends inside a character loses nothing.
    A delta's text is the decoded answer up to its last token minus the text already sent, so the deltas add up
    to exactly the completion's text; a step that ends inside a character waits for the next one.
    """

    def __init__(
        self,
        nc: Client,
        job: Job,
        progress: Progress,
        *,
        text: Callable[[Progress, int | None], str],
        tail: Callable[[Progress, int], str],
        model: str,
    ):
        """``text(progress, n)`` is the answer's text over its first ``n`` tokens (all of them for ``None``);
        ``tail(progress, n)`` what the tokens past the first ``n`` add to it (the engine's
        :meth:`~costwise.worker.GenerationEngine.tail`: a step decodes its own tokens, not the whole answer)."""
        self._nc = nc
        self._job = job
        self._text = text
        self._tail = tail
        self._model = model
        self._subject = subjects.deltas(job.request.tenant, job.request.request_id)
        streamed = job.checkpoint.streamed_tokens if job.checkpoint is not None else None
        self._offset = progress.tokens if streamed is None else min(streamed, progress.tokens)
        self._sent = text(progress, self._offset) if self._offset else ""

    @property
    def offset(self) -> int:
        """How many of the answer's tokens the stream has carried (what a checkpoint records)."""
        return self._offset

    async def step(self, progress: Progress) -> None:
        """After each engine step: publish the new tokens (unless they end inside a character)."""
        if progress.tokens > self._offset:
            await self._publish(progress, final=False)
            # nats-py swallows a cancellation that lands while it flushes (``_flush_pending``): a spot notice's
            # cancel would be lost and the job generate on instead of being handed back. Raise it again.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise asyncio.CancelledError

    async def finish(self, progress: Progress, finish_reason: str) -> None:
        """The generation ended: publish the rest, marked final, before the completion is published."""
        await self._publish(progress, final=True, finish_reason=finish_reason)

    async def flush(self, progress: Progress) -> None:
        """Before a hand-back: publish what the checkpoint holds (all but a character's first bytes), so the
        resuming worker's first delta, at :attr:`offset`, follows on without a gap. (The hand-back is published on
        the same connection after it, so the server has routed these deltas before the resuming worker can exist.)"""
        if progress.tokens > self._offset:  # not step(): this runs after the cancel, on purpose
            await self._publish(progress, final=False)

    async def _publish(self, progress: Progress, *, final: bool, finish_reason: str | None = None) -> None:
        tokens = progress.tokens
        if final:  # once per job, the whole text: the deltas add up to exactly the completion's
            text = self._text(progress, None)
            piece = text[len(self._sent) :] if text.startswith(self._sent) else ""
        else:
            piece = self._tail(progress, self._offset)
            if not piece or piece.endswith(_PARTIAL):  # vLLM's detokenizer holds a split character back: ""
                return
        delta = StreamDelta(
            request_id=self._job.request.request_id,
            tenant=self._job.request.tenant,
            offset=self._offset,
            text=piece,
            tokens=tokens - self._offset,
            model=self._model,
            final=final,
            finish_reason=finish_reason,  # type: ignore[arg-type]
        )
        await self._nc.publish(self._subject, encode(delta))
        self._offset, self._sent = tokens, self._sent + piece
