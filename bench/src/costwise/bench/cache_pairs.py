"""Semantic cache precision/recall on labelled question pairs, through the service's own lookup path.

Each pair gets a tenant of its own: ``text_a`` is stored, ``text_b`` looked up, and tenant isolation (a hard
filter in the index) guarantees the only candidate is that pair's ``text_a``. Every lookup runs exactly what
the cache runs for a request: MiniLM embedding, Qdrant Edge nearest neighbour in scope, the verifier.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from costwise.cache import CachedAnswer, CacheSettings, EdgeIndex, Probe, SemanticCache, load_semantic
from costwise.cache.verify import load_pairs
from costwise.contracts import CachePolicy, ChatMessage, InferenceRequest, Output, Usage
from costwise.embed import Backend

from ._harness import percentile

_FAR_FUTURE_MS = 2**52  # entries that never expire during the run
SCOPE = "bench"  # every stored and asked question shares one scope: only the text decides


async def run(
    pairs_file: Path, limit: int | None, split: str, target_precision: float | None, embed_backend: Backend | None
) -> dict[str, Any]:
    pairs = load_pairs(pairs_file, None if split == "all" else "held_out")  # type: ignore[arg-type]
    pairs = pairs[:limit] if limit else pairs
    backend = embed_backend or CacheSettings().embed_backend
    with tempfile.TemporaryDirectory(prefix="costwise-cache-pairs-") as tmp:
        semantic = await asyncio.to_thread(load_semantic, EdgeIndex.open(Path(tmp) / "index"), backend)
        try:
            await store_all(semantic, [p.text_a for p in pairs])
            verdicts, latencies = await _look_up_all(semantic, [p.text_b for p in pairs], target_precision)
        finally:
            await semantic.close()
    labels = np.array([p.label for p in pairs], dtype=bool)
    hits = np.array(verdicts, dtype=bool)
    true_hits, false_hits = int((hits & labels).sum()), int((hits & ~labels).sum())
    return {
        "benchmark": "cache-pairs",
        "pairs_file": str(pairs_file),
        "split": split,
        "settings": {
            "embed_backend": backend,
            "min_similarity": semantic.verifier.min_similarity,
            "target_precision": target_precision or getattr(semantic.verifier, "default_target_precision", None),
        },
        "pairs": len(pairs),
        "positives": int(labels.sum()),
        "hits": int(hits.sum()),
        "true_hits": true_hits,
        "false_hits": false_hits,
        "recall": round(true_hits / max(1, int(labels.sum())), 4),
        "wrong_hit_share": round(false_hits / max(1, int(hits.sum())), 4),
        "lookup_ms_p50": round(percentile(latencies, 50), 2),
        "lookup_ms_p99": round(percentile(latencies, 99), 2),
    }


async def store_all(semantic: SemanticCache, texts: list[str], batch: int = 256) -> None:
    """Store ``texts[i]`` as tenant ``p{i}``'s cached question (one tenant per pair: a pair meets only itself)."""
    output = Output(text="-", finish_reason="stop")
    answer = CachedAnswer(request_id="bench", output=output, model=None, usage=Usage(), stored_ms=0)
    with tqdm(total=len(texts), desc="store text_a", unit="q") as bar:
        for start in range(0, len(texts), batch):
            vectors = await asyncio.to_thread(semantic.embedder.embed_many, texts[start : start + batch])
            for i, vector in enumerate(vectors, start):
                probe = Probe(question=texts[i], scope=SCOPE, vector=vector)
                await semantic.store(f"p{i}", f"p{i}.a", probe, answer, expires_ms=_FAR_FUTURE_MS)
            bar.update(len(vectors))


def pair_request(i: int, text: str, target_precision: float | None) -> InferenceRequest:
    """Pair ``i``'s question as a request of tenant ``p{i}`` (whose cache holds only pair ``i``'s other side)."""
    return InferenceRequest(
        request_id=f"q{i}",
        tenant=f"p{i}",
        messages=[ChatMessage(role="user", content=text)],
        cache=CachePolicy(target_precision=target_precision),
    )


async def _look_up_all(
    semantic: SemanticCache, texts: list[str], target_precision: float | None
) -> tuple[list[bool], list[float]]:
    verdicts, latencies = [], []
    for i, text in enumerate(tqdm(texts, desc="look up text_b", unit="q")):
        req = pair_request(i, text, target_precision)
        start = time.perf_counter()
        probe = Probe(question=text, scope=SCOPE, vector=await semantic.embedder.embed(text))
        hit = await semantic.lookup(req, probe, now_ms=0)
        latencies.append((time.perf_counter() - start) * 1000)
        verdicts.append(hit is not None)
    return verdicts, latencies
