"""``--chaos``: while the replay runs, SIGTERM (a spot notice) or SIGKILL (a crash) a pool worker at random; the
``costwise up`` supervisor restarts it. Seeded, so a run's sequence of choices is reproducible."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import psutil

from ._stack import Stack

__all__ = ["Chaos"]

# The supervisor gives up on a process that crashed five times within five minutes: stay below it per pool. It
# counts a death when it sees it, which for a SIGTERM is after the hand-back (up to the worker's grace, 5 s by
# default) and a tick; the window here is a minute longer, so a kill that left this one is out of the supervisor's
# too (a 5,000-line replay with the windows equal lost its stack: five deaths in 299 s, four kills in 300).
MAX_KILLS_PER_WINDOW = 4
WINDOW_S = 360.0
SETTLE_S = 5.0
"""A worker is only killed once it has run this long (a fresh one is still loading or resuming jobs)."""


@dataclass
class Chaos:
    stack: Stack
    seed: int
    mean_interval_s: float = 15.0
    kills: list[dict[str, Any]] = field(default_factory=list)
    _recent: dict[str, deque[float]] = field(default_factory=dict)

    async def run(self, stop: asyncio.Event) -> None:
        """Kill until ``stop`` is set: an exponential wait, then one worker chosen at random, one signal."""
        rng, started = random.Random(self.seed), time.monotonic()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), rng.expovariate(1.0 / self.mean_interval_s))
                return
            victims = self._eligible()
            if victims:
                pool, proc = victims[rng.randrange(len(victims))]
                sig = rng.choice((signal.SIGTERM, signal.SIGKILL))
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, sig)
                    self._recent.setdefault(pool, deque()).append(time.monotonic())
                    at = round(time.monotonic() - started, 2)
                    self.kills.append({"at_s": at, "pool": pool, "signal": sig.name, "pid": proc.pid})

    def _eligible(self) -> list[tuple[str, psutil.Process]]:
        now, out = time.monotonic(), []
        for proc in self.stack.workers():
            with contextlib.suppress(psutil.Error):
                pool = proc.environ().get("COSTWISE_WORKER_POOL", "?")
                recent = self._recent.setdefault(pool, deque())
                while recent and now - recent[0] > WINDOW_S:
                    recent.popleft()
                if len(recent) < MAX_KILLS_PER_WINDOW and time.time() - proc.create_time() > SETTLE_S:
                    out.append((pool, proc))
        return sorted(out, key=lambda pair: (pair[0], pair[1].pid))

    def summary(self) -> dict[str, Any]:
        signals = [k["signal"] for k in self.kills]
        return {
            "sigterm": signals.count("SIGTERM"),
            "sigkill": signals.count("SIGKILL"),
            "seed": self.seed,
            "mean_interval_s": self.mean_interval_s,
            "kills": self.kills,
        }
