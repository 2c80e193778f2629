"""Following one streamed request: its :class:`StreamDelta` messages in order, then its :class:`Result`."""

from __future__ import annotations

import asyncio
import collections
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass

from nats.aio.client import Client as Nats
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from costwise.contracts import DecodeError, ErrorCode, ErrorInfo, Result, StreamDelta, decode, subjects

__all__ = ["Delta", "DeltaStream", "chunks"]

log = logging.getLogger("costwise.client")

_WORDS = re.compile(r"\s*\S+\s*|\s+")
_WORDS_PER_CHUNK = 4


@dataclass(frozen=True)
class Delta:
    """A piece of a streamed answer. The last one has no text and carries the request's ``result``, and ``error``
    when the request failed (the result's error) or the answer changed after part of it was sent."""

    text: str
    offset: int | None = None
    """Token offset of the piece's first token; ``None`` for text taken from the result (a cache hit, a gap)."""
    model: str = ""
    result: Result | None = None
    error: ErrorInfo | None = None


def chunks(text: str) -> list[str]:
    """``text`` in a few words per piece: how an answer that arrives whole (a cache hit) is streamed."""
    words = _WORDS.findall(text)
    return ["".join(words[i : i + _WORDS_PER_CHUNK]) for i in range(0, len(words), _WORDS_PER_CHUNK)]


class DeltaStream:
    """The deltas of one request. :meth:`open` it *before* publishing the request: deltas are core NATS
    messages, so one published before the subscription exists is not delivered to it.

    Repeated offsets (a regenerated job after a crash) are dropped; a jump or an overlap is a gap, after which
    the rest of the answer is taken from the result, which always has the whole text.
    """

    def __init__(self) -> None:
        self._arrived: collections.deque[StreamDelta] = collections.deque()
        self._wake: asyncio.Future[None] | None = None
        """What :meth:`follow` awaits while nothing has arrived: set by a delta or the result."""
        self._sub: Subscription | None = None
        self._next = 0
        self._sent = ""
        self._broken = False

    @classmethod
    async def open(cls, nc: Nats, tenant: str, request_id: str) -> DeltaStream:
        stream = cls()
        stream._sub = await nc.subscribe(subjects.deltas(tenant, request_id), cb=stream._on_msg)
        return stream

    async def close(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def follow(self, result: Awaitable[Result]) -> AsyncIterator[Delta]:
        """The answer's pieces as they arrive, then a last :class:`Delta` with ``result`` (which raises what
        awaiting ``result`` raised, e.g. a timeout)."""
        arriving = asyncio.ensure_future(result)
        arriving.add_done_callback(self._woken)
        try:
            while True:
                # One future per wait, no task per delta: this loop runs once per engine step of every stream.
                for piece in self._drained():
                    yield piece
                if arriving.done():
                    break
                self._wake = asyncio.get_running_loop().create_future()
                await self._wake
            await asyncio.sleep(0)  # deltas routed before the result may still be in their subscription's queue
            for piece in self._drained():
                yield piece
            for last in self._finish(arriving.result()):
                yield last
        finally:
            arriving.cancel()

    async def _on_msg(self, msg: Msg) -> None:
        try:
            self._arrived.append(decode(msg.data, StreamDelta))
        except DecodeError:  # workers check what they publish; a bad one costs a gap, never the stream
            log.warning("undecodable delta on %s", msg.subject)
            return
        self._woken()

    def _woken(self, _: object = None) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _drained(self) -> Iterator[Delta]:
        while self._arrived:
            if (piece := self._take(self._arrived.popleft())) is not None:
                yield piece

    def _take(self, delta: StreamDelta) -> Delta | None:
        end = delta.offset + delta.tokens
        if self._broken or (delta.offset < self._next and end <= self._next):
            return None  # after a gap, or a repeat
        if delta.offset != self._next:
            self._broken = True
            return None
        self._next, self._sent = end, self._sent + delta.text
        return Delta(delta.text, delta.offset, delta.model) if delta.text else None

    def _finish(self, result: Result) -> list[Delta]:
        if result.status != "ok" or result.output is None:
            error = result.error or ErrorInfo(code=ErrorCode.INTERNAL, message="result without output")
            return [Delta("", model=result.model or "", result=result, error=error)]
        text = result.output.text
        if not text.startswith(self._sent):
            why = "the answer changed after part of it was streamed (another backend answered)"
            return [Delta("", result=result, error=ErrorInfo(code=ErrorCode.INTERNAL, message=why))]
        rest = [Delta(piece, model=result.model or "") for piece in chunks(text[len(self._sent) :])]
        return [*rest, Delta("", model=result.model or "", result=result)]
