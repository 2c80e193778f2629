"""What worker-level prefix affinity saves: prompt tokens served from vLLM's prefix cache, two worker processes.

Two worker processes of one pool, each with its own engine and so its own prefix cache, behind the router.
``prefixes`` conversations each share a long system prompt and ask ``per_prefix`` questions, shuffled, with
``concurrency`` in flight. Each setting runs on prompts of its own (fresh words), so no run inherits another's
warm cache: worker-level affinity on (the router's default burst) and off (burst 0: every job goes to the
pool's shared queue and whichever worker pulls first gets it), alternated ``repeats`` times.

Reported per run: the share of prompt tokens served from the prefix cache (what the engine did not have to
prefill), prefill tokens computed, and the request latency. Without cache pressure each worker prefills a
prefix at most once, so the saving is the repeated first prefills on every worker a prefix lands on; with
many workers, or caches too small for every prefix, it grows.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from tqdm import tqdm

from costwise.catalog import default_catalog
from costwise.client import Client
from costwise.contracts import ChatMessage, InferenceRequest, SamplingParams
from costwise.models import resolve
from costwise.router import RouterSettings
from costwise.router import build as build_router

from ._harness import Stack, nats_stack, percentile, to_route

POOL = "affinity-bench"
_WORDS = [
    "river",
    "stone",
    "cloud",
    "ledger",
    "harbor",
    "copper",
    "violet",
    "engine",
    "meadow",
    "signal",
    "lantern",
    "orbit",
    "garden",
    "timber",
]


async def run(
    model: str, prefixes: int, per_prefix: int, prefix_words: int, concurrency: int, repeats: int
) -> dict[str, Any]:
    model_dir = str(await asyncio.to_thread(resolve, model))
    rows = []
    async with nats_stack() as stack:
        workers = [_spawn(stack, model_dir, i) for i in range(2)]
        try:
            await _serving(workers)
            burst = RouterSettings().affinity_burst
            runs = list(itertools.product(range(repeats), (burst, 0)))
            for n, (repeat, b) in enumerate(tqdm(runs, desc="runs", unit="run")):
                prompts = _conversations(n, prefixes, per_prefix, prefix_words)
                measured = await _measure(stack, b, f"run{n}", prompts, concurrency)
                rows.append({"repeat": repeat, "affinity": b > 0, "affinity_burst": b, **measured})
        finally:
            for proc, _ in workers:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return {
        "benchmark": "affinity",
        "model": model,
        "workers": 2,
        "prefixes": prefixes,
        "per_prefix": per_prefix,
        "prefix_words": prefix_words,
        "concurrency": concurrency,
        "rows": rows,
        "medians": [_median(rows, on) for on in (True, False)],
    }


def _spawn(stack: Stack, model_dir: str, i: int) -> tuple[subprocess.Popen[bytes], Path]:
    env = dict(
        os.environ,
        COSTWISE_WORKER_NATS_URL=stack.url,
        COSTWISE_WORKER_POOL=POOL,
        COSTWISE_WORKER_MODEL=model_dir,
        COSTWISE_WORKER_WORKER_ID=f"w{i}",
        COSTWISE_WORKER_MAX_MODEL_LEN="2048",
    )
    log = stack.tmp / f"worker-{i}.log"
    with open(log, "wb") as out:  # own process group: the worker and its engine-core child stop together
        proc = subprocess.Popen(
            [sys.executable, "-m", "costwise.worker"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc, log


async def _serving(workers: list[tuple[subprocess.Popen[bytes], Path]], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not all(b"serving pool" in log.read_bytes() for _, log in workers):
        for proc, log in workers:
            if proc.poll() is not None:
                raise RuntimeError(f"a worker exited while loading; see {log}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"workers not serving after {timeout:.0f}s; see their logs in {workers[0][1].parent}")
        await asyncio.sleep(0.5)


def _conversations(seed: int, prefixes: int, per_prefix: int, words: int) -> list[tuple[str, str]]:
    """(system prompt, question) pairs, shuffled: ``prefixes`` long system prompts, ``per_prefix`` questions each."""
    rng = random.Random(seed)
    systems = [" ".join(rng.choice(_WORDS) for _ in range(words)) for _ in range(prefixes)]
    pairs = [(s, f"Question {j}: what is {rng.randint(1, 999)} about?") for s in systems for j in range(per_prefix)]
    rng.shuffle(pairs)
    return pairs


async def _measure(
    stack: Stack, burst: int, tenant: str, prompts: list[tuple[str, str]], concurrency: int
) -> dict[str, Any]:
    router = await build_router(RouterSettings(nats_url=stack.url, affinity_burst=burst), catalog=default_catalog(POOL))
    await router.start()
    submit, client, gate = to_route(stack.nc.jetstream()), Client(stack.nc), asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    prompt_tokens = cached = 0

    async def one(i: int, system: str, question: str) -> None:
        nonlocal prompt_tokens, cached
        req = InferenceRequest(
            request_id=f"{tenant}-{i}",
            tenant=tenant,
            messages=[ChatMessage(role="system", content=system), ChatMessage(role="user", content=question)],
            sampling=SamplingParams(max_tokens=4),
        )
        async with gate:
            started = time.perf_counter()
            await submit(req)
            result = await client.result(tenant, req.request_id, timeout=300)
            latencies.append((time.perf_counter() - started) * 1000)
        if result.status != "ok":
            raise RuntimeError(f"{req.request_id}: {result.status} {result.error}")
        prompt_tokens += result.usage.prompt_tokens
        cached += result.usage.cached_prompt_tokens

    try:
        started = time.perf_counter()
        await asyncio.gather(*(one(i, s, q) for i, (s, q) in enumerate(prompts)))
        wall = time.perf_counter() - started
    finally:
        await router.stop()
    return {
        "requests": len(prompts),
        "prompt_tokens": prompt_tokens,
        "cached_prompt_tokens": cached,
        "cached_share": round(cached / max(prompt_tokens, 1), 4),
        "prefill_tokens": prompt_tokens - cached,
        "ms_p50": round(percentile(latencies, 50), 1),
        "ms_p99": round(percentile(latencies, 99), 1),
        "wall_s": round(wall, 2),
    }


def _median(rows: list[dict[str, Any]], affinity: bool) -> dict[str, Any]:
    mine = [r for r in rows if r["affinity"] is affinity]
    keys = ("cached_share", "prefill_tokens", "ms_p50", "ms_p99", "wall_s")
    return {"affinity": affinity, **{k: statistics.median(r[k] for r in mine) for k in keys}}
