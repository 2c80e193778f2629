"""What both clients of an OpenAI-compatible server share on the way: which failures to retry and how long to wait,
reading a body within a size limit, and server-sent events (both directions)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterable, AsyncIterator

__all__ = ["RETRYABLE_STATUS", "SSE_DONE", "TooLarge", "backoff_s", "read_limited", "sse_data", "sse_event"]

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
"""Statuses worth another try: overload, rate limits, a server restarting. Every other 4xx is the request's fault."""

SSE_DONE = b"[DONE]"
"""The data of the last event of an OpenAI stream."""


class TooLarge(Exception):
    """A response (or one event of it) went past its size limit."""


def backoff_s(attempt: int, *, base_s: float = 0.25, cap_s: float = 8.0) -> float:
    """How long to wait before try ``attempt + 1``: exponential, jittered so many clients do not retry in step."""
    return min(base_s * 2**attempt, cap_s) * random.uniform(0.5, 1.5)


async def read_limited(chunks: AsyncIterable[bytes], max_bytes: int) -> bytes:
    """The whole body, or :class:`TooLarge` once it passes ``max_bytes`` (a server cannot make us buffer more)."""
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise TooLarge(f"response larger than {max_bytes} bytes")
        parts.append(chunk)
    return b"".join(parts)


async def sse_data(chunks: AsyncIterable[bytes], *, max_bytes: int) -> AsyncIterator[bytes]:
    """The ``data`` of each server-sent event in a byte stream (multi-line data joined by newlines; comments and
    other fields skipped). The whole stream is bounded by ``max_bytes``: :class:`TooLarge` past it."""
    buffer, size = b"", 0
    data: list[bytes] = []
    async for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise TooLarge(f"event stream larger than {max_bytes} bytes")
        *lines, buffer = (buffer + chunk).split(b"\n")
        for line in lines:
            if (event := _line(line.removesuffix(b"\r"), data)) is not None:
                yield event
    # A stream that ends without its last newlines still delivers its last event.
    _line(buffer.removesuffix(b"\r"), data)
    if data:
        yield b"\n".join(data)


def _line(line: bytes, data: list[bytes]) -> bytes | None:
    """Take one line into ``data``; a blank line ends the event: its data, if it had any."""
    if line.startswith(b"data:"):
        data.append(line[5:].removeprefix(b" "))
    elif not line and data:
        event = b"\n".join(data)
        data.clear()
        return event
    return None


def sse_event(data: bytes) -> bytes:
    """One server-sent event carrying ``data`` (which must hold no newline: JSON as msgspec encodes it)."""
    return b"data: " + data + b"\n\n"
