"""An engine as the ttft benchmark times it: when each request reached the engine, and its first step there.

Both paths call the same engine, so splitting a request's time to first token at the engine's door tells the
queue path's own share (getting there) from the engine's (prefill and batching), whatever the engine's speed.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from costwise.worker.engine import Engine, Progress

__all__ = ["EngineClock"]


class EngineClock:
    """Delegates to ``engine``; ``generate`` also records, per call, the seconds from the current batch's start
    (:meth:`start_batch`) to the call, and from the call to its first step."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._batch_started = time.perf_counter()
        self._samples: list[tuple[float, float]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def start_batch(self) -> None:
        self._batch_started = time.perf_counter()
        self._samples = []

    def samples(self) -> list[tuple[float, float]]:
        """``(reached, first_step)`` seconds for each request of the batch that got a step."""
        return list(self._samples)

    async def generate(
        self,
        prompt_ids: list[int],
        params: Any,
        progress: Progress,
        on_step: Callable[[Progress], Awaitable[None]] | None = None,
    ) -> Any:
        reached = time.perf_counter()
        first: list[float] = []

        async def step(done: Progress) -> None:
            if not first:
                first.append(time.perf_counter())
            if on_step is not None:
                await on_step(done)

        try:
            return await self._engine.generate(prompt_ids, params, progress, on_step=step)
        finally:
            if first:
                self._samples.append((reached - self._batch_started, first[0] - reached))
