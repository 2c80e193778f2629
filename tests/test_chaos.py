"""Spot-preemption chaos: worker processes are SIGTERMed and SIGKILLed at random while 200 requests run.

Every request must get exactly one result: none lost, none duplicated.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from nats.aio.client import Client as Nats
from nats.js import JetStreamContext

from costwise.cache import CacheSettings
from costwise.cache import build as build_cache
from costwise.catalog import default_catalog
from costwise.client import Client
from costwise.contracts import ChatMessage, InferenceRequest, SamplingParams, subjects
from costwise.router import RouterSettings
from costwise.router import build as build_router

REQUESTS = 200
PREEMPTIONS = 4  # each replacement loads vLLM for ~40 s on 2 cores
# The requests come in waves, a notice during each but the last, with the next wave queued. Published all at once,
# they were drained by the first worker to load (50 jobs in 7 s) while the others were still loading: a notice then
# found nothing in flight.
WAVES = PREEMPTIONS + 1
WAVE = REQUESTS // WAVES  # far more than all workers' slots: while a wave runs, every worker on it is full
NOTICE_AFTER = WAVE // 4  # results of its wave before a notice: the workers are mid-wave, most of it still queued
HANDED_BACK = re.compile(r"^(\d+\.\d+) .*handed back (\S+) with (\d+) checkpointed tokens")
STARTED = re.compile(r"job (\S+) started \(delivery")


class WorkerProcs:
    """Worker processes of one pool, restarted as soon as one is killed (a spot pool refilling)."""

    def __init__(self, nats_url: str, pool: str, model: str, logs: Path) -> None:
        self.env = dict(os.environ)
        self.env.update(
            COSTWISE_WORKER_NATS_URL=nats_url,
            COSTWISE_WORKER_POOL=pool,
            COSTWISE_WORKER_MODEL=model,
            COSTWISE_WORKER_SERVED_MODEL_NAME="tiny-llama",
            COSTWISE_WORKER_MAX_MODEL_LEN="1024",
            # Few slots: the tiny model would otherwise drain the queue in seconds, before a notice can land.
            COSTWISE_WORKER_MAX_IN_FLIGHT="4",
            COSTWISE_WORKER_ACK_WAIT_S="4",  # a SIGKILLed worker's jobs come back within seconds
            COSTWISE_WORKER_HEARTBEAT_S="1",
            # No grace: a job in flight at the notice is always handed back (with a grace, a notice that lands
            # on a worker finishing short answers can find nothing left to hand back, and prove nothing).
            COSTWISE_WORKER_GRACE_S="0",
            COSTWISE_WORKER_MAX_DELIVER="50",
            COSTWISE_WORKER_SPOT="true",
            COSTWISE_LOG_LEVEL="debug",  # a line per job started: which worker has work in flight
        )
        self.logs = logs
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []
        self.sigterms: list[tuple[float, Path]] = []
        self.signalled: set[int] = set()  # pids: a preempted VM is gone, even while its process winds down
        self.kills = {"SIGTERM": 0, "SIGKILL": 0}

    def spawn(self) -> None:
        log = self.logs / f"worker-{len(self.procs)}.log"
        with open(log, "wb") as out:
            # Own process group: the worker and its vLLM engine-core child go down together.
            proc = subprocess.Popen(
                [sys.executable, "-m", "costwise.worker"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append((proc, log))

    def serving(self) -> list[tuple[subprocess.Popen[bytes], Path]]:
        """Live workers not yet preempted whose engine has loaded. A SIGTERMed worker is not picked again: a SIGKILL
        landing on it before it logged its hand-back would leave the run with no hand-back to check."""
        return [
            (p, log)
            for p, log in self.procs
            if p.poll() is None and p.pid not in self.signalled and "serving pool" in _read(log)
        ]

    def busy_with(self, jobs: set[str]) -> list[tuple[subprocess.Popen[bytes], Path]]:
        """Serving workers that have started one of ``jobs``: while more of them are queued than all slots
        together, such a worker has a job in flight (a notice to it proves something)."""
        return [(p, log) for p, log in self.serving() if jobs & set(STARTED.findall(_read(log)))]

    def handed_back(self) -> list[float]:
        """For each SIGTERMed worker that handed jobs back: seconds from the notice to its last hand-back."""
        delays = []
        for sent, log in self.sigterms:
            stamps = [float(m.group(1)) for m in map(HANDED_BACK.match, _read(log).splitlines()) if m]
            if stamps:  # a worker whose jobs all finished within the grace hands nothing back
                delays.append(max(stamps) - sent)
        return delays

    def preempt(self, rng: random.Random, sig: signal.Signals, jobs: set[str]) -> None:
        proc, log = rng.choice(self.busy_with(jobs))
        self.kills[sig.name] += 1
        self.signalled.add(proc.pid)
        if sig == signal.SIGTERM:
            self.sigterms.append((time.time(), log))
        if sig == signal.SIGKILL:
            os.killpg(proc.pid, sig)  # the spot VM is gone: everything on it dies at once
        else:
            proc.send_signal(sig)  # the spot notice goes to the worker, which shuts its engine down
        self.spawn()

    def stop(self) -> None:
        for proc, _ in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest_asyncio.fixture
async def workers(nats_url: str, tiny_model: str, unique: str, tmp_path: Path) -> AsyncIterator[WorkerProcs]:
    procs = WorkerProcs(nats_url, unique, tiny_model, tmp_path)
    procs.spawn()
    procs.spawn()
    yield procs
    procs.stop()


@pytest_asyncio.fixture
async def front(nats_url: str, unique: str, semantic_cache: Any) -> AsyncIterator[None]:
    """The cache and a router for this test's pool, stopped even when the test fails: both share durable
    consumers with every later test's, which a leaked router (knowing only this test's catalog) would steal from."""
    cache = await build_cache(CacheSettings(nats_url=nats_url), semantic=semantic_cache)
    router = await build_router(RouterSettings(nats_url=nats_url), catalog=default_catalog(unique))
    await cache.start()
    await router.start()
    yield
    await router.stop()
    await cache.stop()


@pytest.mark.timeout(900)
@pytest.mark.usefixtures("front")
async def test_every_request_gets_exactly_one_result_under_preemption(
    nc: Nats, workers: WorkerProcs, unique: str
) -> None:
    # Status polls are not what this test checks: on a box busy loading vLLM they may take more than 5 s.
    client, rng, js = Client(nc), random.Random(7), nc.jetstream(timeout=30)
    requests = [
        InferenceRequest(
            request_id=f"c{i}",
            tenant=unique,
            messages=[ChatMessage(role="user", content=f"Tell me about request c{i}")],
            # Long enough that a wave outlasts the seconds this process can be kept waiting while vLLM generates.
            sampling=SamplingParams(max_tokens=rng.choice([128, 256, 384])),
        )
        for i in range(REQUESTS)
    ]
    ids = {req.request_id for req in requests}
    collect = asyncio.create_task(client.wait_all(unique, ids, timeout=840))
    # Random order, but both kinds of preemption always happen, each while the worker it hits has jobs in flight.
    # Three SIGTERMs: a notice this process sends seconds late (it can wait that long while vLLM generates) may find
    # its worker's wave drained and nothing in flight, and the run must show a hand-back.
    notices = rng.sample([signal.SIGKILL] + [signal.SIGTERM] * (PREEMPTIONS - 1), PREEMPTIONS)
    waves = [requests[k * WAVE : (k + 1) * WAVE] for k in range(WAVES)]
    try:
        await _publish(client, waves[0])
        for k in range(PREEMPTIONS):
            jobs = {req.request_id for req in waves[k]}
            await _until(js, unique, _mid_wave(workers, jobs))
            # The next wave queues behind this one's rest first: the worker the notice hits refills its slots at once.
            await _publish(client, waves[k + 1])
            workers.preempt(rng, notices.pop(), jobs)
        results = await collect
    finally:
        collect.cancel()

    assert set(results) == ids and all(r.status == "ok" for r in results.values())
    stored = await js.stream_info(subjects.RESULTS.name, subjects_filter=subjects.tenant_results(unique))
    per_request = stored.state.subjects or {}
    assert len(per_request) == REQUESTS and set(per_request.values()) == {1}, "a request got more than one result"
    assert workers.kills["SIGTERM"] >= 1 and workers.kills["SIGKILL"] >= 1, workers.kills
    _assert_sigterm_hand_back_within_a_second(workers)


async def _until(js: JetStreamContext, tenant: str, ready: Callable[[set[str]], bool]) -> None:
    """Wait until ``ready`` holds for the ids of ``tenant``'s requests that have a result."""
    while True:
        info = await js.stream_info(subjects.RESULTS.name, subjects_filter=subjects.tenant_results(tenant))
        if ready({subject.rsplit(".", 1)[1] for subject in info.state.subjects or {}}):
            return
        await asyncio.sleep(0.2)


async def _publish(client: Client, wave: list[InferenceRequest]) -> None:
    for req in wave:
        await client.publish(req)


def _mid_wave(workers: WorkerProcs, jobs: set[str]) -> Callable[[set[str]], bool]:
    """The moment for a notice: ``NOTICE_AFTER`` of the wave's ``jobs`` have results and a worker has started one."""
    return lambda done: len(done & jobs) >= NOTICE_AFTER and bool(workers.busy_with(jobs))


def _assert_sigterm_hand_back_within_a_second(workers: WorkerProcs) -> None:
    delays = workers.handed_back()
    assert delays, "no SIGTERMed worker had a job in flight; the chaos run proved nothing about hand-back"
    assert max(delays) < 1.0, delays


def _read(log: Path) -> str:
    return log.read_text(errors="replace")
