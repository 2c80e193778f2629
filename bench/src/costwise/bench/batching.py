"""Continuous batching: tokens/s at 1, 4, 16 in flight through the queue vs the same engine called directly."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from costwise.client import Client
from costwise.contracts import ChatMessage, InferenceRequest, SamplingParams
from costwise.worker import Engine, WorkerSettings
from costwise.worker import build as build_worker
from costwise.worker.engine import Progress

from ._harness import front, load_engine, nats_stack


def _messages(i: int) -> list[ChatMessage]:
    return [ChatMessage(role="user", content=f"Request {i}: write a short story about a lighthouse keeper.")]


async def _direct(engine: Engine, concurrency: int, n: int, max_tokens: int) -> tuple[int, float]:
    gate = asyncio.Semaphore(concurrency)
    params = SamplingParams(max_tokens=max_tokens)

    async def one(i: int) -> int:
        async with gate:
            progress = Progress()
            # No logprobs, as the worker asks for none for the queued path's (direct-stage) jobs.
            await engine.generate(engine.prompt_ids(_messages(i)), params, progress, logprobs=False)
            return len(progress.token_ids)

    start = time.perf_counter()
    tokens = sum(await asyncio.gather(*(one(i) for i in range(n))))
    return tokens, time.perf_counter() - start


async def _queued(
    stack: Any, engine: Engine, concurrency: int, n: int, max_tokens: int, tag: str, with_cache: bool
) -> tuple[int, float]:
    pool = f"bench{tag}"
    worker = await build_worker(
        WorkerSettings(pool=pool, max_in_flight=concurrency, max_model_len=engine.max_model_len),
        nc=stack.nc,
        engine=engine,
    )
    await worker.start()
    client = Client(stack.nc)
    async with front(stack, pool, cache=with_cache) as submit:
        start = time.perf_counter()
        ids = set()
        for i in range(n):
            req = InferenceRequest(
                request_id=f"{tag}-{i}",
                tenant=pool,
                messages=_messages(i),
                sampling=SamplingParams(max_tokens=max_tokens),
            )
            ids.add(await submit(req))
        results = await client.wait_all(pool, ids, timeout=1800)
        elapsed = time.perf_counter() - start
    await worker.drain(0)
    return sum(r.usage.completion_tokens for r in results.values()), elapsed


async def _level(
    stack: Any, engine: Engine, c: int, n: int, max_tokens: int, repeats: int, with_cache: bool
) -> dict[str, Any]:
    """Both paths ``repeats`` times, alternating which goes first (neither always gets the warmer engine)."""
    rates: dict[str, list[float]] = {"direct": [], "queue": []}
    for r in range(repeats):
        order = ("queue", "direct") if (c + r) % 2 else ("direct", "queue")
        for path in order:
            if path == "direct":
                tokens, seconds = await _direct(engine, c, n, max_tokens)
            else:
                tokens, seconds = await _queued(stack, engine, c, n, max_tokens, f"c{c}r{r}", with_cache)
            rates[path].append(tokens / seconds)
    direct, queue = statistics.median(rates["direct"]), statistics.median(rates["queue"])
    return {
        "in_flight": c,
        "requests": n,
        "direct_tok_s": round(direct, 1),
        "queue_tok_s": round(queue, 1),
        "queue_overhead": round(1 - queue / direct, 4),
        "runs_direct_tok_s": [round(x, 1) for x in rates["direct"]],
        "runs_queue_tok_s": [round(x, 1) for x in rates["queue"]],
    }


async def run(
    model: str, levels: list[int], requests_per_slot: int, max_tokens: int, with_cache: bool = False, repeats: int = 3
) -> dict[str, Any]:
    """Medians over ``repeats`` alternating runs per level: one run cannot tell 5 % from this machine's noise."""
    engine = await load_engine(model, max(levels))
    async with nats_stack() as stack:
        await _direct(engine, 2, 2, 8)  # warm-up: first-request costs are not batching costs
        rows = [
            await _level(stack, engine, c, max(8, requests_per_slot * c), max_tokens, repeats, with_cache)
            for c in levels
        ]
    engine.shutdown()
    base = rows[0]["queue_tok_s"]
    for row in rows:
        row["queue_speedup_vs_1"] = round(row["queue_tok_s"] / base, 2)
    path = "cache + router" if with_cache else "router"
    return {
        "benchmark": "batching",
        "model": model,
        "max_tokens": max_tokens,
        "queue_path": path,
        "repeats": repeats,
        "rows": rows,
    }
