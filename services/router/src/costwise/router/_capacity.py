"""Live load of every backend, read from its JetStream consumer in the background so routing never waits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from costwise.contracts import subjects

__all__ = ["Capacity", "Load"]

log = logging.getLogger("costwise.router")


@dataclass(frozen=True, slots=True)
class Load:
    """One backend's queue as last read: jobs waiting, jobs being served, idle pull requests."""

    backlog: int = 0
    in_flight: int = 0
    idle_pulls: int = 0
    present: bool = False
    """Its consumer exists (some worker of it has started at least once)."""

    @property
    def serving(self) -> bool:
        """Some worker is pulling or busy. A consumer with neither has no live worker behind it."""
        return self.present and (self.idle_pulls > 0 or self.in_flight > 0)


class Capacity:
    """Polls each backend's consumer every ``interval_s``; ``load(name)`` is a dict read."""

    def __init__(self, backends: Iterable[str], interval_s: float) -> None:
        self._js: JetStreamContext | None = None
        self._names = tuple(backends)
        self._interval_s = interval_s
        self._loads: dict[str, Load] = {}
        self._misses: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    def load(self, name: str) -> Load:
        return self._loads.get(name, Load())

    def down(self, name: str) -> bool:
        # Between two pulls a live worker shows no idle pull request for a moment; only a backend seen
        # without one twice in a row counts as down.
        return self._misses.get(name, 0) >= 2

    async def refresh(self) -> None:
        loads = await asyncio.gather(*(self._read(name) for name in self._names))
        for name, load in zip(self._names, loads, strict=True):
            self._loads[name] = load
            self._misses[name] = 0 if load.serving else self._misses.get(name, 0) + 1

    async def _read(self, name: str) -> Load:
        assert self._js is not None, "start() first"
        spec = subjects.worker_jobs(name)
        try:
            info = await self._js.consumer_info(spec.stream, spec.durable)
        except NotFoundError:
            return Load()
        return Load(
            backlog=info.num_pending or 0,
            in_flight=info.num_ack_pending or 0,
            idle_pulls=info.num_waiting or 0,
            present=True,
        )

    async def _poll(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # a slow or restarting server must not stop routing: keep the last reading
                log.warning("could not read backend capacity", exc_info=True)
            await asyncio.sleep(self._interval_s)

    async def start(self, js: JetStreamContext) -> None:
        self._js = js
        await self.refresh()
        await self.refresh()  # two readings, so a backend that is down is known as such from the start
        self._task = asyncio.create_task(self._poll(), name="capacity")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
