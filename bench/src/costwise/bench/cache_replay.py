"""Replay an FAQ-style query log through the cache with a Zipf popularity skew; judge hits by intent label.

Every distinct query gets a popularity rank (shuffled, seeded); requests are drawn with P(rank r) ∝ r^-s.
A miss is "answered" with the query's intent label and stored, as the service stores a model's answer; a hit
is right when the cached entry's label equals the query's. Exact repeats hit the exact cache, rewordings
go through the semantic path (embedding, Qdrant Edge, verifier) exactly as the service runs it.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from costwise.bench.data_sources import read_labelled, zipf_probs
from costwise.cache import CachedAnswer, EdgeIndex, Probe, SemanticCache, load_semantic
from costwise.contracts import ChatMessage, InferenceRequest, Output, Usage

_TENANT, _SCOPE, _FOREVER_MS = "replay", "faq", 2**52


async def run(
    path: Path, requests: int, zipf_s: float, seed: int, text_col: str | None, label_col: str | None
) -> dict[str, Any]:
    queries = read_labelled(path, text_col, label_col)
    rng = np.random.default_rng(seed)
    rng.shuffle(queries)  # type: ignore[arg-type]
    stream = rng.choice(len(queries), size=requests, p=zipf_probs(len(queries), zipf_s))
    with tempfile.TemporaryDirectory(prefix="costwise-replay-") as tmp:
        semantic = await asyncio.to_thread(load_semantic, EdgeIndex.open(Path(tmp) / "index"))
        try:
            counts = await _replay(semantic, [queries[i] for i in stream])
        finally:
            await semantic.close()
    hits = counts["exact"] + counts["semantic_right"] + counts["semantic_wrong"]
    return {
        "benchmark": "cache-replay",
        "queries_file": str(path),
        "distinct_queries": len(queries),
        "requests": requests,
        "zipf_s": zipf_s,
        **counts,
        "hit_rate": round(hits / requests, 4),
        "exact_hit_rate": round(counts["exact"] / requests, 4),
        "semantic_hit_rate": round((hits - counts["exact"]) / requests, 4),
        "wrong_hit_share": round(counts["semantic_wrong"] / max(1, hits), 4),
        # Of the requests an earlier same-intent answer could have served, the share the semantic cache did serve.
        "semantic_opportunity_taken": round(counts["semantic_right"] / max(1, counts["semantic_opportunity"]), 4),
    }


async def _replay(semantic: SemanticCache, stream: list[tuple[str, str]]) -> dict[str, int]:
    exact: dict[str, str] = {}
    answered: set[str] = set()  # intents with a stored answer
    counts = {"exact": 0, "semantic_right": 0, "semantic_wrong": 0, "misses": 0, "semantic_opportunity": 0}
    for i, (text, label) in enumerate(tqdm(stream, desc="replay", unit="req")):
        if text in exact:  # the exact cache's key is the canonical request: here, the text
            counts["exact"] += 1
            continue
        # An earlier request of the same intent was answered (and stored): a semantic hit could serve this one.
        counts["semantic_opportunity"] += label in answered
        req = InferenceRequest(request_id=f"r{i}", tenant=_TENANT, messages=[ChatMessage(role="user", content=text)])
        probe = Probe(question=text, scope=_SCOPE, vector=await semantic.embedder.embed(text))
        hit = await semantic.lookup(req, probe, now_ms=0)
        if hit is not None:
            counts["semantic_right" if hit.answer.output.text == label else "semantic_wrong"] += 1
            continue
        counts["misses"] += 1
        exact[text] = label
        answered.add(label)
        answer = CachedAnswer(
            request_id=req.request_id,
            output=Output(text=label, finish_reason="stop"),
            model=None,
            usage=Usage(),
            stored_ms=0,
        )
        await semantic.store(_TENANT, f"k{i}", probe, answer, expires_ms=_FOREVER_MS)
    return counts
