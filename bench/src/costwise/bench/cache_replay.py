"""Replay an FAQ-style query log through the cache with a Zipf popularity skew; judge hits by answer key.

Every distinct query gets a popularity rank (shuffled, seeded); requests are drawn with P(rank r) ∝ r^-s.
A miss is "answered" with the query's label and stored, as the service stores a model's answer; a hit is right
when the cached entry's label equals the query's. Exact repeats hit the exact cache, rewordings go through the
semantic path (embedding, Qdrant Edge, verifier) exactly as the service runs it.

The label of a known query log (banking77, Bitext) is the workload's answer key (:func:`.workload.answer_key`):
the fine intent (Bitext's ``intent``, not its 11 coarse ``category`` values), and for an intent whose answer
depends on a value the user names ("track order 1135") the intent with those values, so a hit across values is
wrong and does not count as an opportunity. ``--label-col`` takes a column as it is. ``intents`` keeps one side
of the trap set's intent split (:func:`.trap_set.intent_split`): ``held_out`` replays intents a verifier tuned
on the ``dev`` side never saw.
"""

from __future__ import annotations

import asyncio
import csv
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm import tqdm

from costwise.bench.data_sources import Utterance, zipf_probs
from costwise.bench.trap_set import intent_split
from costwise.bench.workload import NOT_ANSWER_DETERMINING, answer_key
from costwise.cache import CachedAnswer, EdgeIndex, Probe, SemanticCache, load_semantic
from costwise.contracts import ChatMessage, InferenceRequest, Output, Usage

__all__ = ["read_log", "run"]

Intents = Literal["all", "dev", "held_out"]
_TENANT, _SCOPE, _FOREVER_MS = "replay", "faq", 2**52
_MAX_QUERY_CHARS = 4096  # a query log line longer than this is no FAQ question: skipped, counted


def read_log(
    path: Path, text_col: str | None = None, label_col: str | None = None, intents: Intents = "all"
) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """Distinct ``(text, label)`` pairs of one CSV (sorted) and what was read: the source recognised (``bitext``,
    ``banking77`` or ``None``), the label rule, rows skipped."""
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        text = text_col or ("text" if "text" in fields else "utterance")
        intent = label_col or ("intent" if "intent" in fields else "category")
        if text not in fields or intent not in fields:
            raise SystemExit(f"cache-replay: {path} has no {text!r} or {intent!r} column (columns: {fields})")
        rows = [(r[text].strip(), r[intent], (r.get("entity_value") or "").strip()) for r in reader]
    source = None if label_col else _source_of(fields, {label for _, label, _ in rows})
    kept, skipped = set(), 0
    for query, label, value in rows:
        if not query or len(query) > _MAX_QUERY_CHARS:
            skipped += 1
        elif source is None or intents == "all" or intent_split(source, label) == intents:
            key = answer_key(source, Utterance(query, label, (value,) if value else ())) if source else label
            kept.add((query, key))
    info = {"source": source, "label": "answer_key" if source else intent, "intents": intents, "skipped": skipped}
    return sorted(kept), info


def _source_of(fields: Sequence[str], labels: set[str]) -> str | None:
    """Which known query log a file is, from its shape: Bitext annotates entities; banking77 has its intents."""
    if "entity_value" in fields and "intent" in fields:
        return "bitext"
    return "banking77" if labels & NOT_ANSWER_DETERMINING["banking77"] else None


async def run(
    path: Path,
    requests: int,
    zipf_s: float,
    seed: int,
    text_col: str | None,
    label_col: str | None,
    intents: Intents = "all",
) -> dict[str, Any]:
    queries, info = read_log(path, text_col, label_col, intents)
    if not queries:
        raise SystemExit(f"cache-replay: no queries in {path} (intents={intents})")
    rng = np.random.default_rng(seed)
    rng.shuffle(queries)  # type: ignore[arg-type]
    stream = rng.choice(len(queries), size=requests, p=zipf_probs(len(queries), zipf_s))
    with tempfile.TemporaryDirectory(prefix="costwise-replay-") as tmp:
        semantic = await asyncio.to_thread(load_semantic, EdgeIndex.open(Path(tmp) / "index"))
        try:
            counts = await _replay(semantic, [queries[i] for i in stream])
        finally:
            await semantic.close()
    return _report(path, info, len(queries), requests, zipf_s, counts)


def _report(
    path: Path, info: dict[str, Any], distinct: int, requests: int, zipf_s: float, counts: dict[str, int]
) -> dict[str, Any]:
    hits = counts["exact"] + counts["semantic_right"] + counts["semantic_wrong"]
    semantic_hits = counts["semantic_right"] + counts["semantic_wrong"]
    return {
        "benchmark": "cache-replay",
        "queries_file": str(path),
        **info,
        "distinct_queries": distinct,
        "requests": requests,
        "zipf_s": zipf_s,
        **counts,
        "hit_rate": round(hits / requests, 4),
        "exact_hit_rate": round(counts["exact"] / requests, 4),
        "semantic_hit_rate": round(semantic_hits / requests, 4),
        "wrong_hit_share": round(counts["semantic_wrong"] / max(1, hits), 4),
        "semantic_wrong_share": round(counts["semantic_wrong"] / max(1, semantic_hits), 4),
        # Of the requests an earlier same-answer request could have served, the share the semantic cache did serve.
        "semantic_opportunity_taken": round(counts["semantic_right"] / max(1, counts["semantic_opportunity"]), 4),
    }


async def _replay(semantic: SemanticCache, stream: list[tuple[str, str]]) -> dict[str, int]:
    exact: dict[str, str] = {}
    answered: set[str] = set()  # labels with a stored answer
    counts = {"exact": 0, "semantic_right": 0, "semantic_wrong": 0, "misses": 0, "semantic_opportunity": 0}
    for i, (text, label) in enumerate(tqdm(stream, desc="replay", unit="req")):
        if text in exact:  # the exact cache's key is the canonical request: here, the text
            counts["exact"] += 1
            continue
        # An earlier request with the same label was answered (and stored): a semantic hit could serve this one.
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
