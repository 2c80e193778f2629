"""Preemption: how fast a job comes back after SIGTERM (checkpointed hand-back) and after SIGKILL (ack_wait),
and how many tokens the next worker must generate again with and without the checkpoint."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from costwise.contracts import ChatMessage, InferenceRequest, Job, SamplingParams, subjects
from costwise.messaging import publish
from costwise.worker import Worker, WorkerSettings
from costwise.worker import build as build_worker

from ._harness import load_engine, nats_stack


async def _await(cond: Any, timeout: float = 60) -> None:
    deadline = time.perf_counter() + timeout
    while not cond():
        if time.perf_counter() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.005)


def _progress(worker: Worker) -> int:
    return max((len(r.progress.token_ids) for r in worker.running.values()), default=0)


async def _one(stack: Any, engine: Any, kind: str, i: int, ack_wait_s: float, after_tokens: int) -> dict[str, float]:
    pool = f"pre{kind}{i}"
    settings = WorkerSettings(
        pool=pool, max_model_len=engine.max_model_len, ack_wait_s=ack_wait_s, heartbeat_s=ack_wait_s / 3
    )
    first = await build_worker(settings, nc=stack.nc, engine=engine)
    await first.start()
    req = InferenceRequest(
        request_id=f"{pool}-job",
        tenant=pool,
        messages=[ChatMessage(role="user", content=f"story {i}")],
        sampling=SamplingParams(max_tokens=1500),
    )
    await publish(
        stack.nc.jetstream(), subjects.jobs(pool), Job(job_id=req.request_id, request=req, pool=pool), msg_id=pool
    )
    await _await(lambda: _progress(first) >= after_tokens)
    done_tokens = _progress(first)
    start = time.perf_counter()
    if kind == "sigterm":
        await first.drain(0)
    else:
        await first.abandon()
    second = await build_worker(settings, nc=stack.nc, engine=engine)
    await second.start()
    await _await(lambda: bool(second.running), timeout=ack_wait_s * 3 + 10)
    requeue = time.perf_counter() - start
    resumed = next(iter(second.running.values())).progress.resumed
    await second.drain(0)
    return {"requeue_s": requeue, "tokens_done": done_tokens, "regenerated": done_tokens - resumed}


async def run(model: str, trials: int, ack_wait_s: float, after_tokens: int) -> dict[str, Any]:
    engine = await load_engine(model, 4)
    await engine.warm_up()
    out: dict[str, Any] = {"benchmark": "preemption", "model": model, "ack_wait_s": ack_wait_s, "trials": trials}
    async with nats_stack() as stack:
        for kind in ("sigterm", "sigkill"):
            rows = [await _one(stack, engine, kind, i, ack_wait_s, after_tokens) for i in range(trials)]
            out[kind] = {
                "requeue_s_median": round(statistics.median(r["requeue_s"] for r in rows), 3),
                "requeue_s_max": round(max(r["requeue_s"] for r in rows), 3),
                "tokens_done_before_preemption_median": statistics.median(r["tokens_done"] for r in rows),
                "tokens_regenerated_median": statistics.median(r["regenerated"] for r in rows),
            }
    engine.shutdown()
    return out
