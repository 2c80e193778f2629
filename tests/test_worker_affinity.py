"""Worker-level prefix affinity: same-prefix requests stay on the worker whose prefix cache is warm, and its
own queue loses nothing when that worker is preempted (SIGTERM) or dies (SIGKILL).

Real nats-server, a real router and two workers of one pool sharing the session's tiny-Llama engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest_asyncio
from nats.aio.client import Client as Nats

from costwise.catalog import default_catalog
from costwise.client import Client, new_request_id
from costwise.contracts import ChatMessage, InferenceRequest, Job, Result, SamplingParams, subjects
from costwise.messaging import publish
from costwise.router import Router, RouterSettings
from costwise.router import build as build_router
from costwise.worker import Worker, WorkerSettings
from costwise.worker import build as build_worker

SHORT = SamplingParams(max_tokens=12, temperature=0.0)


@dataclass
class Pool:
    name: str
    router: Router
    a: Worker
    b: Worker

    def other(self, worker_id: str) -> Worker:
        return self.b if worker_id == self.a.settings.worker_id else self.a


@pytest_asyncio.fixture
async def pool(nats_url: str, nc: Nats, engine: Any, unique: str) -> AsyncIterator[Pool]:
    router = await build_router(
        RouterSettings(nats_url=nats_url, capacity_refresh_s=0.05, learned=False), catalog=default_catalog(unique)
    )

    async def worker(name: str, **kw: Any) -> Worker:
        settings = WorkerSettings(
            pool=unique, worker_id=f"{unique}.{name}", ack_wait_s=2, heartbeat_s=0.5, own_idle_s=1, **kw
        )
        return await build_worker(settings, nc=nc, engine=engine)

    # a serves one job at a time, so a job sent to it while it is busy stays queued in its own queue
    pool = Pool(unique, router, await worker("a", max_in_flight=1), await worker("b"))
    for service in (pool.a, pool.b, router):
        await service.start()
    yield pool
    await router.stop()
    for w in (pool.a, pool.b):
        await w.drain(0)


def _request(tenant: str, system: str, question: str = "hello", sampling: SamplingParams = SHORT) -> InferenceRequest:
    messages = [ChatMessage(role="system", content=system), ChatMessage(role="user", content=question)]
    return InferenceRequest(
        request_id=new_request_id(), tenant=tenant, model="small", messages=messages, sampling=sampling
    )


async def _ask(nc: Nats, req: InferenceRequest) -> Result:
    """Hand a request to the router (as the cache does on a miss) and wait for its result."""
    await publish(nc.jetstream(), subjects.route(req.tenant), req, msg_id=subjects.dedup_id(req.tenant, req.request_id))
    return await Client(nc).result(req.tenant, req.request_id, timeout=60)


async def _queue_for(nc: Nats, worker: Worker, req: InferenceRequest) -> None:
    """What the router does for a prefix ``worker`` served last: the job goes to that worker's own queue."""
    job = Job(job_id=req.request_id, request=req, pool=worker.settings.pool, tier="small")
    subject = subjects.worker_own_jobs(worker.settings.pool, worker.settings.worker_id)
    await publish(nc.jetstream(), subject, job, msg_id=subjects.dedup_id(req.tenant, req.request_id))


async def _exactly_one_result_each(nc: Nats, tenant: str, reqs: list[InferenceRequest]) -> list[Result]:
    results = [await Client(nc).result(tenant, r.request_id, timeout=90) for r in reqs]
    stored = await nc.jetstream().stream_info(subjects.RESULTS.name, subjects_filter=subjects.tenant_results(tenant))
    found = stored.state.subjects or {}
    assert found == {subjects.results(tenant, r.request_id): 1 for r in reqs}
    return results


async def _until(check: Any, timeout: float = 10) -> None:
    for _ in range(int(timeout / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


async def test_same_prefix_requests_stay_on_the_worker_that_served_it(nc: Nats, pool: Pool) -> None:
    first = await _ask(nc, _request(pool.name, "You are a pirate."))
    warm = first.route[-1].worker_id
    again = []
    for i in range(4):
        # while the router's last reading of that worker's own queue says it is pulling (alive, a slot free) ...
        await _until(lambda: pool.router.capacity.worker_load(pool.name, warm).idle_pulls > 0)
        again.append(await _ask(nc, _request(pool.name, "You are a pirate.", f"question {i}")))
    assert [r.route[-1].worker_id for r in again] == [warm] * 4
    # ... the jobs went through its own queue, not the shared one
    own = subjects.worker_own(pool.name, warm)
    info = await nc.jetstream().consumer_info(own.stream, own.durable)
    assert info.delivered.consumer_seq == 4 and info.num_pending == 0


async def test_a_sigkilled_workers_own_queue_is_served_by_another_worker(nc: Nats, pool: Pool) -> None:
    long = _request(pool.name, "You are a poet.", sampling=SamplingParams(max_tokens=200, temperature=0.0))
    await _queue_for(nc, pool.a, long)
    await _until(lambda: len(pool.a.running) == 1)  # a is busy (one slot) ...
    queued = [_request(pool.name, "You are a poet.", f"q{i}") for i in range(3)]
    for req in queued:  # ... so these wait in its own queue
        await _queue_for(nc, pool.a, req)
    await pool.a.abandon()  # SIGKILL: no ack, no hand-back, no heartbeat
    results = await _exactly_one_result_each(nc, pool.name, [long, *queued])
    assert all(r.status == "ok" for r in results)
    assert {r.route[-1].worker_id for r in results} == {pool.b.settings.worker_id}
    # the server deleted the dead worker's consumer: nothing of it is left behind
    own = subjects.worker_own(pool.name, pool.a.settings.worker_id)
    assert own.durable not in {c.name for c in await nc.jetstream().consumers_info(own.stream)}


async def test_a_sigtermed_worker_hands_its_own_queue_back_at_once(nc: Nats, pool: Pool) -> None:
    long = _request(pool.name, "You are a judge.", sampling=SamplingParams(max_tokens=400, temperature=0.0))
    await _queue_for(nc, pool.a, long)
    await _until(lambda: len(pool.a.running) == 1)
    queued = [_request(pool.name, "You are a judge.", f"q{i}") for i in range(3)]
    for req in queued:
        await _queue_for(nc, pool.a, req)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await pool.a.drain(0)  # spot notice, no grace: checkpoint the running job, hand back the queued ones
    assert loop.time() - started < 1.5
    results = await _exactly_one_result_each(nc, pool.name, [long, *queued])
    assert {r.route[-1].worker_id for r in results} == {pool.b.settings.worker_id}
    # the same prefix now goes to the pool: a's queue is gone
    after = await _ask(nc, _request(pool.name, "You are a judge.", "again"))
    assert after.route[-1].worker_id == pool.b.settings.worker_id
