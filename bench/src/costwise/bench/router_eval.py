"""Learned router and cascade, replayed on labelled outcomes (RouteLLM's CSV format).

Split by a hash of the prompt; everything that is learned or chosen (weights, both operating points) comes from
the training split, with out-of-fold scores where a threshold is picked; every reported number is measured on
the held-back split. Embeddings are cached by a hash of the texts, so a rerun costs seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from costwise.embed import DIMENSIONS, Embedder
from costwise.router.learned import (
    CascadePoint,
    Outcomes,
    Policy,
    ResponseVerifier,
    cascade_point,
    cross_fit,
    evaluate,
    evaluate_cascade,
    load_routellm,
    router_threshold,
    train_mask,
    train_router,
    verifier_matrix,
)

CACHE_DIR = Path.home() / ".cache" / "costwise" / "router-eval"


async def run(
    data: Path,
    fmt: str,
    quality: float,
    price_ratio: float,
    seed: int,
    train_share: float,
    weak: str | None,
    strong: str | None,
    save_router: Path | None,
    save_verifier: Path | None,
) -> dict[str, Any]:
    if fmt != "routellm":
        raise SystemExit(f"unsupported --format {fmt!r} (supported: routellm)")
    return await asyncio.to_thread(
        evaluate_data,
        data,
        quality=quality,
        price_ratio=price_ratio,
        seed=seed,
        train_share=train_share,
        weak=weak,
        strong=strong,
        save_router=save_router,
        save_verifier=save_verifier,
    )


def evaluate_data(
    data: Path,
    *,
    quality: float = 0.95,
    price_ratio: float = 10.0,
    seed: int = 0,
    train_share: float = 0.5,
    weak: str | None = None,
    strong: str | None = None,
    save_router: Path | None = None,
    save_verifier: Path | None = None,
    embedder: Embedder | None = None,
    cache_dir: Path = CACHE_DIR,
) -> dict[str, Any]:
    """The whole evaluation (blocking); ``embedder``: one already loaded (else loaded on a cache miss)."""
    outcomes = load_routellm(data, weak=weak, strong=strong)
    train = train_mask(outcomes.prompts, train_share, seed=seed)
    vectors = embed_cached(outcomes.prompts, cache_dir, embedder)
    tr, te = outcomes.subset(train), outcomes.subset(~train)
    meta = {"data": data.name, "weak": outcomes.weak, "strong": outcomes.strong, "train_rows": int(train.sum())}
    predictor, p_train = train_router(vectors[train], tr.prompts, tr.weak_ok, tr.strong_ok, meta=meta)
    p_test = predictor.p_small_ok(vectors[~train], te.prompts)
    if save_router:
        predictor.save(save_router)
    threshold = router_threshold(p_train, tr.weak_ok, tr.strong_ok, quality)
    router = evaluate(p_test < threshold, te.weak_ok, te.strong_ok, price_ratio, weak_calls=p_test >= threshold)
    out: dict[str, Any] = {
        "benchmark": "router-eval",
        "data": str(data),
        "weak": outcomes.weak,
        "strong": outcomes.strong,
        "quality": quality,
        "price_ratio": price_ratio,
        "seed": seed,
        "train_n": int(train.sum()),
        "n": len(te),
        "weak_accuracy": round(float(te.weak_ok.mean()), 4),
        "strong_accuracy": round(float(te.strong_ok.mean()), 4),
        "router": _report(router, {"threshold": _finite(threshold)}),
    }
    best = router
    if outcomes.weak_responses is not None:
        point, cascade = _cascade(tr, te, p_train, p_test, quality, price_ratio, save_verifier, meta)
        out["cascade"] = _report(
            cascade, {"direct_below": _finite(point.direct), "escalate_below": _finite(point.escalate)}
        )
        best = max(router, cascade, key=lambda policy: policy.cost_reduction)
    out.update(
        achieved_accuracy=round(best.accuracy, 4),
        achieved_quality=round(best.accuracy / best.strong_accuracy, 4),
        strong_call_share=round(best.strong_call_share, 4),
        cost_reduction=round(best.cost_reduction, 4),
        policy="cascade" if best is not router else "router",
    )
    return out


def _cascade(
    tr: Outcomes,
    te: Outcomes,
    p_train: NDArray[np.float64],
    p_test: NDArray[np.float64],
    quality: float,
    price_ratio: float,
    save_verifier: Path | None,
    meta: dict[str, Any],
) -> tuple[CascadePoint, Policy]:
    """The weak model runs unless the router sends the prompt straight to strong; its answer is escalated when
    the verifier (response features, trained on the training split's weak answers) doubts it."""
    assert tr.weak_responses is not None and te.weak_responses is not None
    v_train_x, v_test_x = verifier_matrix(tr.prompts, tr.weak_responses), verifier_matrix(te.prompts, te.weak_responses)
    v_train, head = cross_fit(v_train_x, tr.weak_ok, c=0.3)
    point = cascade_point(p_train, v_train, tr.weak_ok, tr.strong_ok, quality, price_ratio=price_ratio)
    if save_verifier:
        ResponseVerifier(
            head, point.escalate, {**meta, "quality": quality, "direct_below": _finite(point.direct)}
        ).save(save_verifier)
    policy = evaluate_cascade(point, p_test, head.predict(v_test_x), te.weak_ok, te.strong_ok, price_ratio)
    return point, policy


def _finite(threshold: float) -> float:
    """A threshold on a probability, for JSON: -inf (nothing below it) is 0, +inf (everything) is 1."""
    return round(float(np.clip(threshold, 0.0, 1.0)), 4)


def _report(policy: Policy, point: dict[str, float]) -> dict[str, Any]:
    return {
        "operating_point": point,
        "achieved_accuracy": round(policy.accuracy, 4),
        "achieved_quality": round(policy.accuracy / policy.strong_accuracy, 4),
        "strong_call_share": round(policy.strong_call_share, 4),
        "weak_call_share": round(policy.weak_call_share, 4),
        "cost_reduction": round(policy.cost_reduction, 4),
    }


def embed_cached(
    texts: list[str], cache_dir: Path, embedder: Embedder | None = None, batch: int = 64
) -> NDArray[np.float32]:
    """MiniLM embeddings of ``texts``; each text is embedded once per ``cache_dir`` (shards of ``keys``, one
    SHA-256 per text, and ``vectors``), so any subset or union of earlier data costs no new embedding."""
    keys = [hashlib.sha256(text.encode()).hexdigest() for text in texts]
    known = _load_shards(cache_dir)
    missing = sorted({k: i for i, k in enumerate(keys) if k not in known}.values())
    if missing:
        fresh = _embed([texts[i] for i in missing], embedder or Embedder.load(threads=1), batch)
        cache_dir.mkdir(parents=True, exist_ok=True)
        shard_keys = np.array([keys[i] for i in missing])
        np.savez(
            cache_dir / f"minilm-{hashlib.sha256(shard_keys.tobytes()).hexdigest()[:16]}.npz",
            keys=shard_keys,
            vectors=fresh,
        )
        known.update(zip(shard_keys.tolist(), fresh, strict=True))
    return np.stack([known[k] for k in keys]) if keys else np.zeros((0, DIMENSIONS), dtype=np.float32)


def _load_shards(cache_dir: Path) -> dict[str, NDArray[np.float32]]:
    known: dict[str, NDArray[np.float32]] = {}
    for shard in sorted(cache_dir.glob("minilm-*.npz")):
        with np.load(shard, allow_pickle=False) as z:
            known.update(zip(z["keys"].tolist(), z["vectors"], strict=True))
    return known


def _embed(texts: list[str], embedder: Embedder, batch: int) -> NDArray[np.float32]:
    vectors = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
    order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths pad less per batch
    for start in tqdm(range(0, len(texts), batch), desc="embed prompts", unit="batch"):
        rows = order[start : start + batch]
        vectors[rows] = embedder.embed_many([texts[i] for i in rows])
    return vectors


def render(out: dict[str, Any]) -> str:
    """The JSON object as a short table, for a terminal."""
    lines = [
        f"{out['data']}: {out['n']} held-out prompts ({out['train_n']} for training), "
        f"weak {out['weak']} {out['weak_accuracy']:.3f}, strong {out['strong']} {out['strong_accuracy']:.3f}",
        f"target: {out['quality']:.0%} of strong accuracy, weak price = strong / {out['price_ratio']:g}",
        f"{'policy':<10}{'accuracy':>10}{'quality':>10}{'strong calls':>14}{'weak calls':>12}{'cost cut':>10}",
    ]
    for name in ("router", "cascade"):
        if name in out:
            p = out[name]
            lines.append(
                f"{name:<10}{p['achieved_accuracy']:>10.4f}{p['achieved_quality']:>10.3f}"
                f"{p['strong_call_share']:>14.1%}{p['weak_call_share']:>12.1%}{p['cost_reduction']:>10.1%}"
            )
    return "\n".join(lines)
