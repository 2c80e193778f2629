"""An engine as the ttft benchmark times it: when each request reached the engine, and its first step there.

Requests are told apart by their prompt: each has its own, and the worker's prompt ids are the ones
:meth:`EngineClock.at_engine` makes from the same messages.

Both paths call the same engine, so splitting a request's time to first token at the engine's door tells the
queue path's own share (getting there) from the engine's (prefill and batching), whatever the engine's speed.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from costwise.contracts import ChatMessage
from costwise.worker.engine import Engine, Progress

__all__ = ["EngineClock"]


class EngineClock:
    """Delegates to ``engine``; ``generate`` also records, per prompt, when it was called and when its first step
    came (``time.monotonic()``: the system-wide clock, so times taken in another process compare)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._seen: dict[tuple[int, ...], tuple[float, float]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def at_engine(self, messages: list[ChatMessage]) -> tuple[float, float] | None:
        """``(reached, first_step)`` of the last call whose prompt these messages make (None if none had a step)."""
        return self._seen.pop(tuple(self._engine.prompt_ids(messages)), None)

    async def generate(
        self,
        prompt_ids: list[int],
        params: Any,
        progress: Progress,
        on_step: Callable[[Progress], Awaitable[None]] | None = None,
        *,
        logprobs: bool = True,
    ) -> Any:
        reached = time.monotonic()
        first: list[float] = []

        async def step(done: Progress) -> None:
            if not first:
                first.append(time.monotonic())
            if on_step is not None:
                await on_step(done)

        try:
            return await self._engine.generate(prompt_ids, params, progress, on_step=step, logprobs=logprobs)
        finally:
            if first:
                self._seen[tuple(prompt_ids)] = (reached, first[0])
