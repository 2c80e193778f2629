"""Semantic cache on a trap set: per category, how many should-hit pairs hit and how many traps were served.

Pairs come from :mod:`.trap_set` (JSON lines ``{"text_a", "text_b", "label", "category"}``). As in
``cache-pairs``, each pair gets a tenant of its own: ``text_a`` is stored, ``text_b`` looked up through the
service's own path (MiniLM embedding, Qdrant Edge nearest neighbour in scope, the verifier). With ``compare`` the
same lookups also run through the issue-16-before verifier (the artifact's model with only the original four
vetoes and no near-repeat rule), alternating which goes first, so both columns share the run's conditions.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from costwise.cache import CacheSettings, EdgeIndex, Probe, SemanticCache, load_semantic
from costwise.cache.verify import LEGACY_CHECKS, Verifier
from costwise.embed import Backend

from ._harness import percentile
from .cache_pairs import SCOPE, pair_request, store_all
from .trap_set import CATEGORIES, TrapPair, read_pairs


@dataclass
class _Recording:
    """A verifier that remembers why it refused each pair (the span attributes, without a tracer)."""

    inner: Verifier
    last: str = "no_candidate"
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def candidate_floor(self) -> float:
        return self.inner.candidate_floor

    def decide_all(
        self, query: str, candidates: Sequence[tuple[str, float]], *, target_precision: float | None = None
    ) -> list[Any]:
        decisions = self.inner.decide_all(query, candidates, target_precision=target_precision)
        self.last = decisions[0].refused_by or "accepted"  # each pair has a tenant of its own: one candidate
        return decisions


async def run(
    pairs_file: Path, limit: int | None, compare: bool, target_precision: float | None, embed_backend: Backend | None
) -> dict[str, Any]:
    pairs = read_pairs(pairs_file)[:limit] if limit else read_pairs(pairs_file)
    backend = embed_backend or CacheSettings().embed_backend
    with tempfile.TemporaryDirectory(prefix="costwise-cache-traps-") as tmp:
        semantic = await asyncio.to_thread(load_semantic, EdgeIndex.open(Path(tmp) / "index"), backend)
        verifier = semantic.verifier
        caches = {"new": semantic}
        if compare:
            old = await asyncio.to_thread(
                Verifier.load, threads=1, space=semantic.embedder.space, checks=LEGACY_CHECKS, near_repeats=False
            )
            caches["old"] = SemanticCache(semantic.embedder, semantic.index, old)  # same index and embedder
        try:
            await store_all(semantic, [p.text_a for p in pairs])
            verdicts, reasons, latencies = await _look_up_all(caches, pairs, target_precision)
        finally:
            await semantic.close()  # closes the shared index; the old cache's idle thread ends with the process
    return {
        "benchmark": "cache-traps",
        "pairs_file": str(pairs_file),
        "settings": {
            "embed_backend": backend,
            "min_similarity": verifier.min_similarity,
            "near_repeat_min_similarity": verifier.near_repeat_min_similarity,
            "target_precision": target_precision or verifier.default_target_precision,
            "checks": list(verifier.checks),
            "near_repeats": verifier.near_repeats,
        },
        **{name: summarise(pairs, verdicts[name], reasons[name], latencies[name]) for name in caches},
    }


def summarise(pairs: list[TrapPair], hits: list[bool], reasons: list[str], latencies: list[float]) -> dict[str, Any]:
    """Per category: pairs, hits, served traps, recall (should-hit categories) and served share (traps); the
    lookup's latency past the embedding (index query + verifier), one lookup at a time."""
    categories: dict[str, dict[str, Any]] = {}
    names = [c for c in CATEGORIES if any(p.category == c for p in pairs)]
    names += sorted({p.category for p in pairs} - set(names))
    for name in names:
        rows = [(p, h, r) for p, h, r in zip(pairs, hits, reasons, strict=True) if p.category == name]
        n, hit = len(rows), sum(h for _, h, _ in rows)
        trap = rows[0][0].label == 0
        categories[name] = {
            "label": rows[0][0].label,
            "pairs": n,
            "hits": hit,
            "served_traps": hit if trap else 0,
            "recall": None if trap else round(hit / n, 4),
            "served_share": round(hit / n, 4) if trap else None,
            "refused_by": dict(Counter(r for _, h, r in rows if not h).most_common()),
        }
    should = [h for p, h in zip(pairs, hits, strict=True) if p.label == 1]
    traps = [h for p, h in zip(pairs, hits, strict=True) if p.label == 0]
    return {
        "lookup_ms_p50": round(percentile(latencies, 50), 2),
        "lookup_ms_p99": round(percentile(latencies, 99), 2),
        "categories": categories,
        "totals": {
            "should_hit": {
                "pairs": len(should),
                "hits": sum(should),
                "recall": round(sum(should) / max(1, len(should)), 4),
            },
            "traps": {
                "pairs": len(traps),
                "served": sum(traps),
                "served_share": round(sum(traps) / max(1, len(traps)), 4),
            },
        },
    }


async def _look_up_all(
    caches: dict[str, SemanticCache], pairs: list[TrapPair], target_precision: float | None
) -> tuple[dict[str, list[bool]], dict[str, list[str]], dict[str, list[float]]]:
    verdicts: dict[str, list[bool]] = {name: [] for name in caches}
    reasons: dict[str, list[str]] = {name: [] for name in caches}
    latencies: dict[str, list[float]] = {name: [] for name in caches}
    recorders = {name: _Recording(cache.verifier) for name, cache in caches.items()}  # type: ignore[arg-type]
    for name, cache in caches.items():
        cache.verifier = recorders[name]
    order = list(caches)
    for i, pair in enumerate(tqdm(pairs, desc="look up text_b", unit="q")):
        req = pair_request(i, pair.text_b, target_precision)
        probe = Probe(question=pair.text_b, scope=SCOPE, vector=await caches["new"].embedder.embed(pair.text_b))
        for name in order if i % 2 == 0 else order[::-1]:  # alternate which verifier runs first
            recorders[name].last = "similarity"  # what it stays when the lookup never reaches decide()
            start = time.perf_counter()
            hit = await caches[name].lookup(req, probe, now_ms=0)
            latencies[name].append((time.perf_counter() - start) * 1000)
            verdicts[name].append(hit is not None)
            reasons[name].append(recorders[name].last)
    return verdicts, reasons, latencies
