"""Reading a streamed answer's ``chat.completion.chunk`` events, and telling a whole stream from a broken one.

A stream is whole when it ends with ``[DONE]``. Its status line said 200 before the answer existed, so a server
that fails later (a 5xx upstream of it, a crash, a dropped connection) can only end the stream early or send an
``error`` event: both are raised here, so no caller can take a cut answer for a finished one.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

import msgspec

from ._chat import ChatChunk, ErrorDetail
from ._transport import SSE_DONE, sse_data

__all__ = ["StreamCut", "StreamError", "chat_chunks"]


class _ErrorEvent(msgspec.Struct, kw_only=True):
    """A server that fails after its 200 can only say so in the stream: an event with ``error`` (OpenAI and vLLM
    send an object, some servers a string). Not a field of :class:`ChatChunk`, which servers encode too."""

    error: ErrorDetail | str | None = None


_chunk = msgspec.json.Decoder(ChatChunk)
_error = msgspec.json.Decoder(_ErrorEvent)


class StreamError(Exception):
    """The server reported an error inside a stream it had begun with 200 (an ``{"error": …}`` event)."""


class StreamCut(Exception):
    """The event stream ended without ``[DONE]``: whatever came before may be only part of the answer."""


async def chat_chunks(chunks: AsyncIterable[bytes], *, max_bytes: int) -> AsyncIterator[ChatChunk]:
    """Each chunk of a streamed answer, until ``[DONE]``.

    Raises :class:`StreamError` on an error event, :class:`StreamCut` when the bytes end before ``[DONE]`` (the
    caller decides whether what came is enough: a chunk with a ``finish_reason`` says the answer was complete),
    ``msgspec.DecodeError``/``ValidationError`` on an unreadable event and ``TooLarge`` past ``max_bytes``.
    A transport error of ``chunks`` (a reset connection) passes through as it is.
    """
    async for data in sse_data(chunks, max_bytes=max_bytes):
        if data.strip() == SSE_DONE:
            return
        chunk = _chunk.decode(data)
        if not chunk.choices and chunk.usage is None and (error := _error.decode(data).error) is not None:
            raise StreamError(_message(error))
        yield chunk
    raise StreamCut("the event stream ended without [DONE]")


def _message(error: ErrorDetail | str) -> str:
    if isinstance(error, str):
        return error or "an error event"
    return error.message or error.type or "an error event"
