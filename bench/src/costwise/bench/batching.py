"""Continuous batching: tokens/s at 1, 4, 16 in flight through the queue vs the same engine called directly."""

from __future__ import annotations

import asyncio
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
            await engine.generate(engine.prompt_ids(_messages(i)), params, progress)
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


async def run(
    model: str, levels: list[int], requests_per_slot: int, max_tokens: int, with_cache: bool = False
) -> dict[str, Any]:
    engine = await load_engine(model, max(levels))
    rows = []
    async with nats_stack() as stack:
        await _direct(engine, 2, 2, 8)  # warm-up: first-request costs are not batching costs
        for c in levels:
            n = max(8, requests_per_slot * c)
            # Alternate which path goes first so neither always gets the warmer prefix cache.
            order = ("queue", "direct") if c % 2 else ("direct", "queue")
            measured: dict[str, tuple[int, float]] = {}
            for path in order:
                if path == "direct":
                    measured[path] = await _direct(engine, c, n, max_tokens)
                else:
                    measured[path] = await _queued(stack, engine, c, n, max_tokens, f"c{c}", with_cache)
            d_tok, d_s = measured["direct"]
            q_tok, q_s = measured["queue"]
            rows.append(
                {
                    "in_flight": c,
                    "requests": n,
                    "direct_tok_s": round(d_tok / d_s, 1),
                    "queue_tok_s": round(q_tok / q_s, 1),
                    "queue_overhead": round(1 - (q_tok / q_s) / (d_tok / d_s), 4),
                }
            )
    engine.shutdown()
    base = rows[0]["queue_tok_s"]
    for row in rows:
        row["queue_speedup_vs_1"] = round(row["queue_tok_s"] / base, 2)
    path = "cache + router" if with_cache else "router"
    return {"benchmark": "batching", "model": model, "max_tokens": max_tokens, "queue_path": path, "rows": rows}
