"""One try of a streamed call: the provider's chunks read into an answer, its new text relayed to the client as it
comes. A stream that ends without a finish reason or ``[DONE]``, or with an error event, is :class:`Broken` (worth
another try), never an answer."""

from __future__ import annotations

from collections.abc import AsyncIterable
from dataclasses import dataclass, field

from costwise.contracts import InferenceRequest, Usage
from costwise.openai_wire import (
    ChatChunk,
    StreamCut,
    StreamError,
    WireUsage,
    chat_chunks,
    estimated_usage,
    finish_reason,
    logprob_summary,
)

from ._answer import Answer
from ._relay import Relay

__all__ = ["Broken", "read_answer"]


class Broken(Exception):
    """The stream stopped before the answer was complete."""


@dataclass
class _Try:
    model: str
    text: str = ""
    tokens: int = 0
    """Counted from the chunks: a chunk's logprobs when it has them (one per token), else one."""
    logprobs: list[float] = field(default_factory=list)
    finish: str | None = None
    usage: WireUsage | None = None

    def take(self, chunk: ChatChunk) -> str:
        """Add ``chunk``; the text it adds to the answer."""
        if chunk.usage is not None:
            self.usage = chunk.usage
        self.model = chunk.model or self.model
        if not chunk.choices:
            return ""
        choice = chunk.choices[0]
        self.finish = choice.finish_reason or self.finish
        piece = choice.delta.content or ""
        values = choice.logprobs.values() if choice.logprobs is not None else []
        if piece or values:
            self.text += piece
            self.tokens += max(1, len(values))
            self.logprobs += values
        return piece


async def read_answer(
    body: AsyncIterable[bytes], relay: Relay, req: InferenceRequest, *, model: str, max_bytes: int
) -> Answer:
    """Read one try's event stream into an :class:`Answer`, relaying text the client has not had yet.

    Raises :class:`Broken` (retry), ``Diverged`` (this try's text does not continue what was sent), and what
    :func:`chat_chunks` raises for an unreadable or oversized stream; a dropped connection passes through.
    """
    got = _Try(model=model)
    relay.restart()
    try:
        async for chunk in chat_chunks(body, max_bytes=max_bytes):
            if piece := got.take(chunk):
                await relay.add(piece, got.tokens, got.model)
    except StreamError as exc:
        raise Broken(f"error event after {got.tokens} tokens: {exc}") from None
    except StreamCut:
        if got.finish is None:  # a finish reason without [DONE]: the answer is whole, only the goodbye was lost
            raise Broken(f"the stream ended after {got.tokens} tokens without a finish reason or [DONE]") from None
    relay.check_whole()
    return Answer(
        text=got.text,
        finish_reason=finish_reason(got.finish),
        usage=_usage(got, req),
        logprobs=logprob_summary(got.logprobs),
        model=got.model,
    )


def _usage(got: _Try, req: InferenceRequest) -> Usage:
    """The provider's usage chunk (what it bills); without one (a server that ignores ``include_usage``), the
    tokens counted from the stream and an estimated prompt: billed as an estimate rather than at $0."""
    if got.usage is not None:
        return got.usage.usage()
    return estimated_usage(req.messages, got.tokens)
