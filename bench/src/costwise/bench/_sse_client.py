"""The ttft benchmark's chat client, in a process of its own as a real application's client is.

In the benchmark's process its HTTP and event-stream parsing took about a third of the event loop that also runs
the services and the engine's output handling (py-spy, 16 streams), so it delayed the very requests it timed.

``python -m costwise.bench._sse_client BASE_URL`` (the gateway key in ``COSTWISE_BENCH_KEY``, never in argv) reads
one :class:`Batch` per stdin line, runs its streams at once (each its requests one after the other, as OpenAI-style
``stream: true`` calls) and writes one :class:`Timed` per line to stdout. Times are ``time.monotonic()`` (the
system-wide monotonic clock, so the benchmark's process can compare them with its own).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import msgspec

__all__ = ["KEY_ENV", "Batch", "Sample", "Stream", "Timed", "gaps", "prompt", "run_batch"]

KEY_ENV = "COSTWISE_BENCH_KEY"


class Stream(msgspec.Struct):
    """One chat: starts ``offset_s`` after the batch, then asks one question per entry of ``max_tokens`` in turn."""

    offset_s: float
    max_tokens: list[int]


class Batch(msgspec.Struct):
    tag: str
    streams: list[Stream]
    with_cache: bool = False
    """False: the requests bypass the cache (the first hop is then the router)."""


class Sample(msgspec.Struct):
    """One request: its tag, when it was sent, seconds to its first text, and the gaps between later texts."""

    tag: str
    sent: float
    first_s: float
    gaps_s: list[float]


class Timed(msgspec.Struct):
    samples: list[Sample]


def prompt(tag: str) -> str:
    return f"Request {tag}: tell me a long story about a lighthouse keeper and the sea."


def gaps(stamps: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(stamps)]


class _Delta(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    delta: _Delta


class _Chunk(msgspec.Struct):
    choices: list[_Choice] = []


def _has_text(line: str) -> bool:
    chunk = msgspec.json.decode(line.removeprefix("data: "), type=_Chunk)
    return any(choice.delta.content for choice in chunk.choices)


async def _one(http: httpx.AsyncClient, tag: str, max_tokens: int, *, with_cache: bool) -> Sample:
    body: dict[str, Any] = {
        "model": "auto",
        "messages": [{"role": "user", "content": prompt(tag)}],
        "max_tokens": max_tokens,
        "stream": True,
    }
    if not with_cache:
        body["costwise"] = {"cache": {"mode": "bypass"}}
    stamps: list[float] = []
    sent = time.monotonic()
    async with http.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("data: {") and _has_text(line):
                stamps.append(time.monotonic())
    if not stamps:
        raise RuntimeError(f"request {tag}: the stream carried no text")
    return Sample(tag, sent, stamps[0] - sent, gaps(stamps))


async def run_batch(batch: Batch, one: Callable[[str, int], Awaitable[Sample]]) -> list[Sample]:
    """Every stream of ``batch`` at once, each asking ``one(tag, max_tokens)`` its questions in turn."""

    async def chat(index: int, stream: Stream) -> list[Sample]:
        await asyncio.sleep(stream.offset_s)
        return [await one(f"{batch.tag}-{index}-{turn}", n) for turn, n in enumerate(stream.max_tokens)]

    chats = await asyncio.gather(*(chat(i, stream) for i, stream in enumerate(batch.streams)))
    return [sample for samples in chats for sample in samples]


async def _serve(base_url: str) -> None:
    headers = {"Authorization": f"Bearer {os.environ[KEY_ENV]}"}
    limits = httpx.Limits(max_connections=None)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=300, limits=limits) as http:
        for line in sys.stdin:  # blocking is fine: nothing else runs here between batches
            batch = msgspec.json.decode(line, type=Batch)
            samples = await run_batch(batch, functools.partial(_one, http, with_cache=batch.with_cache))
            sys.stdout.write(msgspec.json.encode(Timed(samples)).decode() + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(_serve(sys.argv[1]))
