"""What costwise adds outside the engine: per-request latency at 1 in flight, CPU per request, pass-through req/s."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from nats.aio.client import Client as Nats
from nats.js.api import DeliverPolicy

from costwise.client import Client
from costwise.contracts import (
    ChatMessage,
    Completion,
    InferenceRequest,
    Job,
    SamplingParams,
    Usage,
    decode,
    subjects,
)
from costwise.messaging import ensure_consumer, publish
from costwise.router import RouterSettings
from costwise.router import build as build_router
from costwise.worker import WorkerSettings
from costwise.worker import build as build_worker

from ._harness import load_engine, nats_stack, percentile


def _request(tenant: str, i: int, max_tokens: int = 1) -> InferenceRequest:
    return InferenceRequest(
        request_id=f"{tenant}-{i}",
        tenant=tenant,
        messages=[ChatMessage(role="user", content=f"ping {i}")],
        sampling=SamplingParams(max_tokens=max_tokens),
    )


async def _engine_path(stack: Any, model: str, n: int) -> dict[str, Any]:
    """One request at a time through router + vLLM worker: end-to-end minus the engine time it reports."""
    engine = await load_engine(model, 1)
    pool = "lat"
    worker = await build_worker(WorkerSettings(pool=pool, max_in_flight=1), nc=stack.nc, engine=engine)
    router = await build_router(RouterSettings(nats_url=stack.url, routes={"auto": pool}))
    await router.start()
    await worker.start()
    js = stack.nc.jetstream()
    sub = await js.subscribe(subjects.completions(pool), ordered_consumer=True, deliver_policy=DeliverPolicy.NEW)
    client = Client(stack.nc)
    # One subscription for all results, opened up front, as a busy client would hold it.
    results = aiter(client.results(pool))
    overheads, e2e = [], []
    for i in range(n + 5):
        start = time.perf_counter()
        await client.publish(_request(pool, i))
        await asyncio.wait_for(anext(results), 60)
        total = time.perf_counter() - start
        done = decode((await sub.next_msg(timeout=10)).data, Completion)
        if i >= 5:  # warm-up
            e2e.append(total * 1000)
            overheads.append((total - done.timings.engine_s) * 1000)
    await sub.unsubscribe()
    await worker.drain(0)
    await router.stop()
    engine.shutdown()
    return {
        "requests": n,
        "e2e_ms_p50": round(statistics.median(e2e), 2),
        "overhead_ms_p50": round(statistics.median(overheads), 2),
        "overhead_ms_p99": round(percentile(overheads, 99), 2),
    }


async def _echo_pool(nc: Nats, pool: str, stop: asyncio.Event) -> None:
    """Stands in for the engine in the pass-through run: answers each job at once (batched fetch)."""
    js = nc.jetstream()
    spec = subjects.worker_jobs(pool)
    await ensure_consumer(js, spec)
    psub = await js.pull_subscribe_bind(spec.durable, spec.stream)
    while not stop.is_set():
        try:
            msgs = await psub.fetch(256, timeout=0.2)
        except TimeoutError:
            continue
        jobs = [decode(m.data, Job) for m in msgs]
        await asyncio.gather(
            *(
                publish(
                    js, subjects.completions(pool), _echo(job), msg_id=subjects.dedup_id(job.request.tenant, job.job_id)
                )
                for job in jobs
            )
        )
        await asyncio.gather(*(m.ack() for m in msgs))


def _echo(job: Job) -> Completion:
    return Completion(
        job=job, worker_id="echo", spot=False, model="echo", text="pong", finish_reason="stop", usage=Usage()
    )


async def _passthrough(stack: Any, n: int) -> dict[str, Any]:
    pool = "echo"
    router = await build_router(RouterSettings(nats_url=stack.url, routes={"auto": pool}, batch=256))
    await router.start()
    stop = asyncio.Event()
    echo = asyncio.create_task(_echo_pool(stack.nc, pool, stop))
    client = Client(stack.nc)
    cpu0, start = time.process_time(), time.perf_counter()
    ids: set[str] = set()
    for chunk in range(0, n, 500):
        batch = [_request(pool, i) for i in range(chunk, min(n, chunk + 500))]
        ids.update(await asyncio.gather(*(client.publish(r) for r in batch)))
    await client.wait_all(pool, ids, timeout=600)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
    stop.set()
    await echo
    await router.stop()
    return {
        "requests": n,
        "req_per_s": round(n / elapsed, 1),
        "cpu_ms_per_request": round(cpu * 1000 / n, 3),
        "note": "router, echo pool and client share one process; CPU is all of it (an upper bound for the router)",
    }


async def run(model: str, requests: int, passthrough: int) -> dict[str, Any]:
    async with nats_stack() as stack:
        latency = await _engine_path(stack, model, requests)
        through = await _passthrough(stack, passthrough)
    return {"benchmark": "overhead", "model": model, "one_in_flight": latency, "passthrough": through}
