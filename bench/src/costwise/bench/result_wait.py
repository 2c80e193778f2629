"""Waiting for one result: a consumer per wait (``Client.result``) vs the shared ``ResultWaiter``.

One nats-server, one process. Each wait starts, then the result is published from a second connection (as a
worker would) and the wait returns: the time from starting the wait to holding the result, alternated between
the two ways ``repeats`` times. Also counted: the consumers each way leaves on the results stream.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from costwise.client import Client, ResultWaiter
from costwise.contracts import Result, subjects
from costwise.messaging import connect, publish

from ._harness import nats_stack, percentile


async def run(waits: int, repeats: int) -> dict[str, Any]:
    async with nats_stack() as stack:
        worker = await connect(stack.url, name="bench-worker")
        client, waiter = Client(stack.nc), await ResultWaiter(stack.nc.jetstream()).start()
        timings: dict[str, list[float]] = {"consumer_per_wait": [], "shared_waiter": []}
        consumers = {}
        try:
            for repeat in range(repeats):
                for way in timings:
                    before = await _consumers(stack.nc)
                    timings[way] += await _waits(way, f"{way}{repeat}", waits, client, waiter, worker)
                    consumers[way] = await _consumers(stack.nc) - before
        finally:
            await waiter.stop()
            await worker.close()
    return {
        "benchmark": "result-wait",
        "waits": waits * repeats,
        "rows": [
            {
                "way": way,
                "ms_p50": round(statistics.median(ms), 3),
                "ms_p99": round(percentile(ms, 99), 3),
                "consumers_left_after_last_round": consumers[way],
            }
            for way, ms in timings.items()
        ],
    }


async def _waits(way: str, tenant: str, n: int, client: Client, waiter: ResultWaiter, worker: Any) -> list[float]:
    worker_js, out = worker.jetstream(), []
    for i in range(n):
        rid = f"r{i}"
        started = time.perf_counter()
        if way == "shared_waiter":
            async with waiter.expect(tenant, rid) as arriving:
                await _answer(worker_js, tenant, rid)
                await asyncio.wait_for(arriving, 10)
        else:
            waiting = asyncio.create_task(client.result(tenant, rid, timeout=10))
            await asyncio.sleep(0)  # let the wait start before the answer is published, as in the gateway
            await _answer(worker_js, tenant, rid)
            await waiting
        out.append((time.perf_counter() - started) * 1000)
    return out


async def _answer(js: Any, tenant: str, rid: str) -> None:
    result = Result(request_id=rid, tenant=tenant, status="ok")
    await publish(js, subjects.results(tenant, rid), result, msg_id=subjects.dedup_id(tenant, rid))


async def _consumers(nc: Any) -> int:
    info = await nc.jetstream().stream_info(subjects.RESULTS.name)
    return int(info.state.consumer_count)
