"""What costwise adds outside the engine: per-request latency at 1 in flight, CPU per request, pass-through req/s."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import psutil
from nats.aio.client import Client as Nats
from nats.js.api import DeliverPolicy

from costwise.catalog import default_catalog
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
from costwise.worker import WorkerSettings
from costwise.worker import build as build_worker

from ._harness import front, load_engine, nats_stack, percentile, service_processes, to_route


def _request(tenant: str, i: int, max_tokens: int = 1, tag: str = "") -> InferenceRequest:
    return InferenceRequest(
        request_id=f"{tenant}-{tag}{i}",
        tenant=tenant,
        messages=[ChatMessage(role="user", content=f"ping {tag}{i}")],
        sampling=SamplingParams(max_tokens=max_tokens),
    )


async def _engine_path(stack: Any, model: str, n: int) -> dict[str, Any]:
    """One request at a time to a vLLM worker: end-to-end minus the engine time it reports, for the thin
    path (router only: the request is published where the cache forwards misses) and the full default path
    (cache with semantic lookups + router; every request a miss, the cache's worst case)."""
    engine = await load_engine(model, 1)
    pool = "lat"
    worker = await build_worker(WorkerSettings(pool=pool, max_in_flight=1), nc=stack.nc, engine=engine)
    await worker.start()
    async with front(stack, pool, cache=False) as submit:
        thin = await _one_in_flight(stack, pool, n, submit, "r")
    async with front(stack, pool, cache=True) as submit:
        full = await _one_in_flight(stack, pool, n, submit, "c")
    await worker.drain(0)
    engine.shutdown()
    return {"requests": n, "router_only": thin, "cache_and_router": full}


async def _one_in_flight(
    stack: Any, pool: str, n: int, submit: Callable[[InferenceRequest], Awaitable[str]], tag: str
) -> dict[str, float]:
    js = stack.nc.jetstream()
    sub = await js.subscribe(subjects.completions(pool), ordered_consumer=True, deliver_policy=DeliverPolicy.NEW)
    client = Client(stack.nc)
    # One subscription for all results, opened up front, as a busy client would hold it.
    results = aiter(client.results(pool))
    overheads, e2e = [], []
    for i in range(n + 5):
        req = _request(pool, i, tag=tag)
        start = time.perf_counter()
        await submit(req)
        await asyncio.wait_for(anext(results), 60)
        total = time.perf_counter() - start
        done = decode((await sub.next_msg(timeout=10)).data, Completion)
        if i >= 5:  # warm-up
            e2e.append(total * 1000)
            overheads.append((total - done.timings.engine_s) * 1000)
    await sub.unsubscribe()
    return {
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


async def _passthrough(stack: Any, n: int, rounds: int, routers: int) -> dict[str, Any]:
    """Req/s with the services in their own processes, as deployed; the echo pool and the client share this one.
    Router only (requests published where the cache forwards misses), then exact cache + router (every request
    a miss: lookup, pending record, forward, and storing the answer)."""
    pool = "echo"
    catalog = stack.tmp / "catalog.json"
    catalog.write_bytes(msgspec.json.encode(default_catalog(pool)))
    env = {
        **os.environ,
        "COSTWISE_ROUTER_NATS_URL": stack.url,
        "COSTWISE_ROUTER_CATALOG": str(catalog),
        "COSTWISE_ROUTER_CONCURRENCY": "256",
        "COSTWISE_CACHE_NATS_URL": stack.url,
        # Exact cache only here: the semantic path is bounded by embedding speed (see cache-lookup).
        "COSTWISE_CACHE_SEMANTIC": "false",
        "COSTWISE_CACHE_BATCH": "256",
    }
    stop = asyncio.Event()
    echo = asyncio.create_task(_echo_pool(stack.nc, pool, stop))
    try:
        thin = await _throughput(stack, pool, env, {"router": routers}, n, rounds, via_cache=False)
        full = await _throughput(stack, pool, env, {"router": routers, "cache": 1}, n, rounds, via_cache=True)
    finally:
        stop.set()
        await echo
    return {"requests_per_round": n, "router_only": thin, "cache_and_router": full}


async def _throughput(
    stack: Any, pool: str, env: dict[str, str], services: dict[str, int], n: int, rounds: int, *, via_cache: bool
) -> dict[str, Any]:
    tag = "c" if via_cache else "r"
    async with service_processes(env, services) as procs:
        submit = _submitter(stack, via_cache=via_cache)
        await Client(stack.nc).wait_all(pool, {await submit(_request(pool, -1, tag=tag))}, timeout=60)  # warm-up
        watched = {name: [psutil.Process(p.pid) for p in ps] for name, ps in procs.items()}
        watched["nats_server"] = [psutil.Process(stack.server_pid)]
        runs = [await _round(stack, pool, submit, range(r * n, (r + 1) * n), tag, watched) for r in range(rounds)]
    return {
        "processes": services,
        **{key: statistics.median(run[key] for run in runs) for key in runs[0]},
        "rounds": runs,
    }


def _submitter(stack: Any, *, via_cache: bool) -> Callable[[InferenceRequest], Awaitable[str]]:
    return Client(stack.nc).publish if via_cache else to_route(stack.nc.jetstream())


async def _round(
    stack: Any,
    pool: str,
    submit: Callable[[InferenceRequest], Awaitable[str]],
    numbers: range,
    tag: str,
    services: dict[str, list[psutil.Process]],
) -> dict[str, float]:
    here = psutil.Process()
    cpu0 = {name: _cpu(ps) for name, ps in services.items()} | {"client_and_echo": _cpu([here])}
    start = time.perf_counter()
    ids: set[str] = set()
    for chunk in range(numbers.start, numbers.stop, 500):
        batch = [_request(pool, i, tag=tag) for i in range(chunk, min(numbers.stop, chunk + 500))]
        ids.update(await asyncio.gather(*(submit(r) for r in batch)))
    await Client(stack.nc).wait_all(pool, ids, timeout=600)
    elapsed = time.perf_counter() - start
    cpu = {name: _cpu(ps) - cpu0[name] for name, ps in services.items()}
    cpu["client_and_echo"] = _cpu([here]) - cpu0["client_and_echo"]
    return {"req_per_s": round(len(numbers) / elapsed, 1)} | {
        f"{name}_cpu_ms_per_request": round(seconds * 1000 / len(numbers), 3) for name, seconds in cpu.items()
    }


def _cpu(procs: list[psutil.Process]) -> float:
    return sum(float(t.user + t.system) for t in (p.cpu_times() for p in procs))


async def run(model: str, requests: int, passthrough: int, rounds: int = 3, routers: int = 1) -> dict[str, Any]:
    async with nats_stack() as stack:
        latency = await _engine_path(stack, model, requests) if requests else None
        through = await _passthrough(stack, passthrough, rounds, routers) if passthrough else None
    return {"benchmark": "overhead", "model": model, "one_in_flight": latency, "passthrough": through}
