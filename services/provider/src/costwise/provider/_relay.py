"""A streamed job's text as :class:`StreamDelta` messages (core NATS), carried across the tries of its call.

The same contract as a GPU worker's deltas: contiguous token offsets from 0, each delta's text exactly what its
tokens add, the last one ``final`` with the finish reason, all published before the completion. A provider cannot
continue an answer it was cut off in (OpenAI's API has no ``continue_final_message``; an assistant message at the
end is read as context, not as a prefix to extend), so a try after a broken stream regenerates the answer from its
start and the relay drops what the client already has: it publishes only text past the end of what was sent, and
raises :class:`Diverged` as soon as the new try's text differs from it (a sampled answer, another model version).
"""

from __future__ import annotations

import asyncio

from nats.aio.client import Client

from costwise.contracts import Checkpoint, ErrorInfo, Job, StreamDelta, encode, subjects

__all__ = ["Diverged", "Relay"]


class Diverged(Exception):
    """A retry's answer does not continue the text the client was already sent."""


class Relay:
    """What one job's stream has carried, and the position of the current try in it."""

    def __init__(self, nc: Client, job: Job) -> None:
        self._nc = nc
        self._job = job
        self._subject = subjects.deltas(job.request.tenant, job.request.request_id)
        # A job handed back mid-stream by a stopped worker: its stream goes on after what that worker sent.
        self._offset = job.checkpoint.tokens if job.checkpoint else 0
        self._sent = job.checkpoint.text if job.checkpoint else ""
        self._at = 0
        """How many characters of its answer the current try has produced."""

    @property
    def sent(self) -> str:
        """The text the stream has carried so far (over every try)."""
        return self._sent

    def checkpoint(self, worker_id: str) -> Checkpoint:
        """What the stream carried, for the worker that continues this job when this one stops: it regenerates
        the answer and sends only what comes after (or an error event, if its answer differs)."""
        return Checkpoint(token_ids=[], text=self._sent, text_tokens=self._offset, worker_id=worker_id)

    def restart(self) -> None:
        """A new try: it regenerates the answer from its first character."""
        self._at = 0

    async def add(self, piece: str, tokens: int, model: str) -> None:
        """The current try's answer went on by ``piece`` (``tokens``: its tokens so far): publish what the client
        lacks. Raises :class:`Diverged` when ``piece`` differs from the text already sent at its position."""
        at, self._at = self._at, self._at + len(piece)
        known = self._sent[at : at + len(piece)]
        if not piece.startswith(known):
            raise Diverged(f"the retry's answer differs from the {len(self._sent)} characters already streamed")
        if new := piece[len(known) :]:
            # Offsets stay contiguous even if this try counts its tokens differently from the first one.
            await self._publish(new, max(tokens - self._offset, 0), model)

    def check_whole(self) -> None:
        """The current try ended: raise :class:`Diverged` when it stopped short of what was already sent."""
        if self._at < len(self._sent):
            raise Diverged(f"the retry's answer ended inside the {len(self._sent)} characters already streamed")

    async def finish(self, finish_reason: str, completion_tokens: int, model: str) -> None:
        """The answer is complete: the last delta, ``final``, before the completion. Its token count brings the
        stream's total to the billed ``completion_tokens`` (the provider's count, not the chunks counted here)."""
        await self._publish("", max(completion_tokens - self._offset, 0), model, final=True, finish=finish_reason)

    async def fail(self, error: ErrorInfo) -> None:
        """The call failed: say so on the stream, without ``final`` (the result, an error or another backend's
        answer, is the authority)."""
        await self._publish("", 0, "", error=error)

    async def _publish(
        self,
        text: str,
        tokens: int,
        model: str,
        *,
        final: bool = False,
        finish: str | None = None,
        error: ErrorInfo | None = None,
    ) -> None:
        delta = StreamDelta(
            request_id=self._job.request.request_id,
            tenant=self._job.request.tenant,
            offset=self._offset,
            text=text,
            tokens=tokens,
            model=model,
            final=final,
            finish_reason=finish,  # type: ignore[arg-type]
            error=error,
        )
        await self._nc.publish(self._subject, encode(delta))
        self._offset, self._sent = self._offset + tokens, self._sent + text
        # nats-py swallows a cancellation that lands while it flushes: a stop's cancel (the job handed back to
        # another worker) would be lost and the call stream on. Raise it again, as the GPU worker does.
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError
