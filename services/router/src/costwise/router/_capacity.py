"""Live load of every backend and of the workers the router prefers, read from their JetStream consumers in
the background so routing never waits; and the sweep that gives a vanished worker's own queue to its pool."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo

from costwise.contracts import subjects
from costwise.contracts.subjects import JOBS
from costwise.messaging import requeue

__all__ = ["Capacity", "Load"]

log = logging.getLogger("costwise.router")
_PAGE = 256  # the server's consumer-list page size


@dataclass(frozen=True, slots=True)
class Load:
    """One queue as last read: jobs waiting, jobs being served, idle pull requests."""

    backlog: int = 0
    in_flight: int = 0
    idle_pulls: int = 0
    present: bool = False
    """Its consumer exists (some worker of it has started at least once)."""

    @property
    def serving(self) -> bool:
        """Some worker is pulling or busy. A consumer with neither has no live worker behind it."""
        return self.present and (self.idle_pulls > 0 or self.in_flight > 0)


def _load(info: ConsumerInfo | None) -> Load:
    if info is None:
        return Load()
    return Load(
        backlog=info.num_pending or 0,
        in_flight=info.num_ack_pending or 0,
        idle_pulls=info.num_waiting or 0,
        present=True,
    )


class Capacity:
    """Lists the job stream's consumers every ``interval_s`` (one request per 256 consumers, whatever the
    number of pools and workers); ``load(name)`` and ``worker_load`` are dict reads."""

    def __init__(self, backends: Iterable[str], interval_s: float, *, burst: int = 4) -> None:
        self._js: JetStreamContext | None = None
        self._names = tuple(backends)
        self._interval_s = interval_s
        self._burst = burst
        self._loads: dict[str, Load] = {}
        self._misses: dict[str, int] = {}
        self._workers: dict[tuple[str, str], Load] = {}
        self._sent: dict[tuple[str, str], int] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def load(self, name: str) -> Load:
        return self._loads.get(name, Load())

    def down(self, name: str) -> bool:
        # Between two pulls a live worker shows no idle pull request for a moment; only a backend seen
        # without one twice in a row counts as down.
        return self._misses.get(name, 0) >= 2

    def watch(self, backend: str, worker: str) -> None:
        """Read ``worker``'s own queue from now on (until its consumer disappears: the worker left)."""
        self._workers.setdefault((backend, worker), Load())

    def worker_load(self, backend: str, worker: str) -> Load:
        return self._workers.get((backend, worker), Load())

    def claim(self, backend: str, worker: str) -> bool:
        """Take a place in ``worker``'s own queue: only while it is pulling (alive, a slot free) and this router
        has sent it fewer than ``burst`` jobs since that reading (one pull can be stale by then)."""
        key = (backend, worker)
        if self.worker_load(backend, worker).idle_pulls <= 0 or self._sent.get(key, 0) >= self._burst:
            return False
        self._sent[key] = self._sent.get(key, 0) + 1
        return True

    async def refresh(self) -> None:
        assert self._js is not None, "start() first"
        # Queued own-queue subjects first, consumers second: a consumer made in between is then seen, so a
        # live worker's queue is never taken for an orphan.
        queued = await self._own_queues()
        consumers = await self._consumers()
        for name in self._names:
            load = _load(consumers.get(subjects.worker_jobs(name).durable))
            self._loads[name] = load
            self._misses[name] = 0 if load.serving else self._misses.get(name, 0) + 1
        for backend, worker in list(self._workers):
            info = consumers.get(subjects.worker_own(backend, worker).durable)
            if info is None:
                del self._workers[backend, worker]  # gone (left, died, or full for long): the pool serves
            else:
                self._workers[backend, worker] = _load(info)
        self._sent.clear()
        await self._sweep(queued, {c.config.filter_subject for c in consumers.values()})

    async def _consumers(self) -> dict[str, ConsumerInfo]:
        assert self._js is not None
        found: dict[str, ConsumerInfo] = {}
        while True:
            page = await self._js.consumers_info(JOBS.name, offset=len(found) or None)
            found.update((info.name, info) for info in page)
            if len(page) < _PAGE:
                return found

    async def _own_queues(self) -> list[str]:
        assert self._js is not None
        info = await self._js.stream_info(JOBS.name, subjects_filter=subjects.WORKER_OWN_JOBS)
        return list(info.state.subjects or {})

    async def _sweep(self, queued: list[str], consumed: set[str | None]) -> None:
        """A worker's own queue whose consumer is gone (SIGKILL: the server deleted it after its jobs' ack_wait
        and the idle threshold) goes to the pool. Other routers may sweep the same queue: the copies' dedup ids
        are the same, so each job is queued once."""
        assert self._js is not None
        for subject in queued:
            owner = subjects.worker_own_owner(subject)
            if owner is None or subject in consumed:
                continue
            moved = await requeue(self._js, JOBS.name, subject, subjects.jobs(owner[0]))
            if moved:  # zero: another router moved them first
                log.warning("worker %s of pool %s is gone: moved %d queued jobs to its pool", owner[1], owner[0], moved)

    async def _poll(self) -> None:
        # Not only cancelled: on Python 3.11 nats-py's requests (asyncio.wait_for) can swallow a cancel.
        while not self._stopping:
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
        self._stopping = True
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
