"""Reading an engine server's streamed answer (server-sent ``chat.completion.chunk`` events) into a job's progress."""

from __future__ import annotations

import time
from collections.abc import AsyncIterable
from dataclasses import dataclass

import msgspec

from costwise.openai_wire import SSE_DONE, ChatChunk, WireUsage, sse_data

from ._progress import Progress
from ._protocol import OnStep

__all__ = ["Reply", "read_stream"]

_chunk = msgspec.json.Decoder(ChatChunk)


@dataclass
class Reply:
    """How a streamed answer ended (its text went into the progress as it came)."""

    finish: str | None = None
    usage: WireUsage | None = None
    """The server's usage (``stream_options.include_usage``); ``None`` when it sent none."""
    done: bool = False
    """The stream's ``[DONE]`` arrived."""


async def read_stream(
    chunks: AsyncIterable[bytes], progress: Progress, on_step: OnStep | None, started: float, *, max_bytes: int
) -> Reply:
    """Add each chunk's text to ``progress`` (awaiting ``on_step`` after each), until ``[DONE]`` or the end.

    A chunk's tokens are its logprobs when the server sent them, else one: vLLM and SGLang stream a token per
    chunk; a server that batches several into one chunk is counted low here, and its usage corrects the total.
    """
    reply = Reply()
    async for data in sse_data(chunks, max_bytes=max_bytes):
        if data.strip() == SSE_DONE:
            reply.done = True
            break
        if _take(_chunk.decode(data), reply, progress, started) and on_step is not None:
            await on_step(progress)
    return reply


def _take(chunk: ChatChunk, reply: Reply, progress: Progress, started: float) -> bool:
    """Whether ``chunk`` added to the answer."""
    if chunk.usage is not None:
        reply.usage = chunk.usage
    if not chunk.choices:
        return False
    choice = chunk.choices[0]
    if choice.finish_reason is not None:
        reply.finish = choice.finish_reason
    text = choice.delta.content or ""
    logprobs = choice.logprobs.values() if choice.logprobs is not None else []
    if not text and not logprobs:
        return False
    if progress.first_token_s is None:
        progress.first_token_s = time.perf_counter() - started
    progress.add_text(text, max(1, len(logprobs)), logprobs)
    return True
