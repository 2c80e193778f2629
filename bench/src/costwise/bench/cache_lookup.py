"""Semantic lookup speed at 10k and 100k cached entries: the index alone, and the whole online path.

"index" = Qdrant Edge nearest neighbour with the tenant/scope/expiry filter, given a vector.
"full" = what a request pays: MiniLM embedding of the question (concurrent lookups share model calls)
+ the index query; the verifier is not in it, it runs only for a candidate above ``min_similarity``
(its cost is reported by ``cache-pairs``).
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from costwise.cache import EdgeIndex
from costwise.embed import DIMENSIONS, Backend, Embedder

from ._harness import percentile

_TENANTS = 20  # entries spread over tenants, as in a shared deployment; queries hit one tenant each


async def run(
    sizes: list[int],
    queries: int,
    concurrency: int,
    backends: list[Backend],
    workers: list[int],
    search_threads: list[int],
    repeats: int = 1,
) -> dict[str, Any]:
    """Every embedding backend, worker count and search pool size against the same filled index, alternated
    ``repeats`` times, so their rows compare side by side; ``medians`` sums the repeats up."""
    embedders = {
        (b, w): await asyncio.to_thread(Embedder.load, threads=1, backend=b, workers=w)
        for b in backends
        for w in workers
    }
    texts = [f"How do I change the delivery address of order {i}?" for i in range(queries)]
    rows = []
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="costwise-lookup-") as tmp:
            index = await asyncio.to_thread(EdgeIndex.open, Path(tmp))
            await _fill(index, size)
            await index.close()
            for repeat, threads in itertools.product(range(repeats), search_threads):
                # Reopened per setting: the search pool size is fixed when a shard is opened.
                index = await asyncio.to_thread(EdgeIndex.open, Path(tmp), search_threads=threads)
                for (backend, n), embedder in embedders.items():
                    measured = await _measure(index, embedder, texts, concurrency)
                    setting = {"entries": size, "embed_backend": backend, "embed_workers": n, "search_threads": threads}
                    rows.append({**setting, "repeat": repeat, **measured})
                await index.close()
    return {
        "benchmark": "cache-lookup",
        "queries": queries,
        "concurrency": concurrency,
        "rows": rows,
        "medians": _medians(rows),
    }


def _medians(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    settings = ("entries", "embed_backend", "embed_workers", "search_threads")
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in settings), []).append(row)
    measures = [k for k in rows[0] if k not in settings and k != "repeat"] if rows else []
    return [
        {**dict(zip(settings, key, strict=True)), **{m: statistics.median(r[m] for r in group) for m in measures}}
        for key, group in groups.items()
    ]


async def _fill(index: EdgeIndex, size: int, batch: int = 1000) -> None:
    rng = np.random.default_rng(7)
    with tqdm(total=size, desc=f"fill {size:,}", unit="entry") as bar:
        for start in range(0, size, batch):
            vectors = rng.standard_normal((min(batch, size - start), DIMENSIONS)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            await index.upsert_many([(f"e{start + i}", v, _payload(start + i)) for i, v in enumerate(vectors)])
            bar.update(len(vectors))
    await index.optimize()


def _payload(i: int) -> dict[str, Any]:
    return {"tenant": f"t{i % _TENANTS}", "scope": "s", "expires_ms": 2.0**52, "question": "q", "answer": "{}"}


async def _measure(index: EdgeIndex, embedder: Embedder, texts: list[str], concurrency: int) -> dict[str, Any]:
    vectors = embedder.embed_many(texts)
    index_ms = []
    start = time.perf_counter()
    for i, vector in enumerate(vectors):
        t0 = time.perf_counter()
        await index.nearest(f"t{i % _TENANTS}", "s", vector, now_ms=0)
        index_ms.append((time.perf_counter() - t0) * 1000)
    index_rate = len(vectors) / (time.perf_counter() - start)
    full_ms: list[float] = []
    gate = asyncio.Semaphore(concurrency)

    async def lookup(i: int, text: str) -> None:
        async with gate:
            t0 = time.perf_counter()
            await index.nearest(f"t{i % _TENANTS}", "s", await embedder.embed(text), now_ms=0)
            full_ms.append((time.perf_counter() - t0) * 1000)

    start = time.perf_counter()
    await asyncio.gather(*(lookup(i, t) for i, t in enumerate(texts)))
    full_rate = len(texts) / (time.perf_counter() - start)
    return {
        "index_lookups_per_s": round(index_rate, 1),
        "index_ms_p50": round(percentile(index_ms, 50), 3),
        "index_ms_p99": round(percentile(index_ms, 99), 3),
        "full_lookups_per_s": round(full_rate, 1),
        "full_ms_p50": round(percentile(full_ms, 50), 2),
        "full_ms_p99": round(percentile(full_ms, 99), 2),
    }
