"""Held-out precision/recall of hit decisions: ``python -m costwise.cache.verify.evaluate --pairs FILE --json``.

Compares cosine-only thresholds, cosine + lexical vetoes, the verifier alone and the verifier with vetoes
(plus one-veto-off ablations) on the HELD-OUT split, which neither training nor calibration has seen.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from costwise.embed import Backend, space_of

from .data import Split, load_pairs
from .lexical import CHECKS, LEGACY_CHECKS
from .metrics import operating_point
from .normalise import near_repeat
from .similarity import cosine_similarities
from .verifier import ARTIFACT_DIR, BASE_SPACE, META_FILE, Verifier

__all__ = ["evaluate", "latency", "main"]

COSINE_ONLY = (0.80, 0.85, 0.90, 0.92, 0.95, 0.97)
PRE_THRESHOLDS = (0.0, 0.70, 0.75, 0.80, 0.85, 0.90)
TARGETS = (0.85, 0.90, 0.95, 0.97, 0.98, 0.99)  # those calibration never reached are skipped


def _row(setting: str, labels: np.ndarray, accepted: np.ndarray, **params: Any) -> dict[str, Any]:
    return {"setting": setting, **params, **operating_point(labels.tolist(), accepted.tolist())}


def evaluate(
    verifier: Verifier, pairs_path: Path, split: Split = "held_out", *, embed_backend: Backend = "torch"
) -> dict[str, Any]:
    """Every setting's hits, recall and wrong-hit share on ``split`` (see the module docstring), with the
    pairs' cosines from ``embed_backend``'s vectors."""
    pairs = load_pairs(pairs_path, split)
    texts = [(p.text_a, p.text_b) for p in pairs]
    y = np.array([p.label for p in pairs], dtype=bool)
    cos = np.array(cosine_similarities(texts, backend=embed_backend))
    logits = verifier.logits(texts)
    prob = np.array(verifier.combine(logits, cos.tolist()))
    vetoed = {name: np.array([check(a, b) for a, b in texts]) for name, check in CHECKS.items()}
    near = np.array([near_repeat(b, a) for a, b in texts])  # text_b is the new question, as in the cache

    def any_veto(names: Sequence[str]) -> np.ndarray:
        return np.zeros(len(pairs), dtype=bool) | np.any([vetoed[n] for n in names], axis=0)

    all_vetoes = any_veto(verifier.checks)
    rows = []
    for c in COSINE_ONLY:
        rows.append(_row("cosine only", y, cos >= c, min_similarity=c))
        rows.append(_row("cosine + vetoes", y, (cos >= c) & ~all_vetoes, min_similarity=c))
    for c in PRE_THRESHOLDS:
        for t in sorted({*TARGETS, verifier.default_target_precision}):
            if t > verifier.max_target_precision:
                continue
            th = verifier.threshold(t)
            base = (cos >= c) & (prob >= th)
            params = {"min_similarity": c, "target_precision": t, "verifier_threshold": round(th, 4)}
            rows.append(_row("verifier", y, base, **params))
            rows.append(_row("verifier + vetoes", y, base & ~all_vetoes, **params))
    default = _default_rows(verifier, y, cos, prob, vetoed, near)
    scorers = {"cosine": cos, "cross-encoder": np.asarray(logits), "cross-encoder + cosine": prob}
    at_recall = [
        {
            "scorer": name,
            "vetoes": v,
            "recall": r,
            "wrong_hit_share": _wrong_at_recall(y, s, all_vetoes if v else None, r),
        }
        for name, s in scorers.items()
        for v in (False, True)
        for r in (0.05, 0.1, 0.2, 0.3, 0.4, 0.5)
    ]
    return {
        "split": split,
        "embed_backend": embed_backend,
        "calibration_space": verifier.space,
        "min_similarity": verifier.min_similarity,
        "pairs": len(pairs),
        "positives": int(y.sum()),
        "vetoes": list(verifier.checks),
        "veto_rates": {
            n: {"positives": float(v[y].mean()), "negatives": float(v[~y].mean())} for n, v in vetoed.items()
        },
        "default": default,
        "rows": rows,
        "at_recall": at_recall,
    }


def _wrong_at_recall(y: np.ndarray, score: np.ndarray, vetoed: np.ndarray | None, recall: float) -> float:
    """Wrong-hit share of the best cut reaching ``recall``: a threshold-free comparison of scorers.

    The cut is chosen on the evaluated pairs themselves, so this ranks scorers; it is not an operating point.
    """
    s = np.where(vetoed, -np.inf, score) if vetoed is not None else score
    order = np.argsort(-s, kind="stable")
    true_hits = np.cumsum(y[order])
    k = int(np.searchsorted(true_hits, recall * y.sum()))
    if k >= len(s) or not np.isfinite(s[order][k]):
        return float("nan")  # vetoes removed too many positives to reach this recall
    return float(1 - true_hits[k] / (k + 1))


def _default_rows(
    verifier: Verifier,
    y: np.ndarray,
    cos: np.ndarray,
    prob: np.ndarray,
    vetoed: dict[str, np.ndarray],
    near: np.ndarray,
) -> list[dict[str, Any]]:
    """The shipped operating point (near-repeats served without the model, from their own lower cosine, when the
    artifact says so), the verifier as shipped before issue 16 on the same scores, then the shipped point with
    each veto removed or used alone."""
    th = verifier.threshold()
    passed = cos >= verifier.min_similarity
    near_ok = near & (cos >= verifier.near_repeat_min_similarity) if verifier.near_repeats else np.zeros_like(near)
    base = (passed & (prob >= th)) | near_ok
    params = {"min_similarity": verifier.min_similarity, "target_precision": verifier.default_target_precision}
    rows = [_row("default", y, base & ~np.logical_or.reduce([vetoed[n] for n in verifier.checks]), **params)]
    legacy = passed & (prob >= th) & ~np.logical_or.reduce([vetoed[n] for n in LEGACY_CHECKS])
    rows.append(_row("before issue 16 (legacy vetoes, no near-repeat rule)", y, legacy, **params))
    rows.append(_row("default, no vetoes", y, base, **params))
    for name in verifier.checks:
        others = [vetoed[n] for n in verifier.checks if n != name] or [np.zeros_like(base)]
        rows.append(_row(f"default without {name} veto", y, base & ~np.logical_or.reduce(others), **params))
        rows.append(_row(f"default, only {name} veto", y, base & ~vetoed[name], **params))
    return rows


def latency(verifier: Verifier, pairs: Sequence[tuple[str, str]], *, warmup: int = 20) -> dict[str, float]:
    """Wall time of one single-pair :meth:`Verifier.decide` past the pre-threshold (the online path), in ms."""
    for a, b in pairs[:warmup]:
        verifier.score([(a, b)])
    times = []
    for a, b in pairs:
        start = time.perf_counter()
        verifier.decide(a, b, 1.0, target_precision=None)  # similarity 1.0: always reaches the checks
        times.append((time.perf_counter() - start) * 1000)
    return {"pairs": len(times), "p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99))}


def _print_table(report: dict[str, Any]) -> None:
    print(f"{report['split']}: {report['pairs']} pairs, {report['positives']} positives")
    print(f"{'setting':32s} {'cos>=':>6s} {'target':>6s} {'p>=':>7s} {'hits':>6s} {'recall':>7s} {'wrong':>7s}")
    for r in report["default"] + report["rows"]:
        print(
            f"{r['setting']:32s} {r['min_similarity']:6.2f} {r.get('target_precision', float('nan')):6.3f} "
            f"{r.get('verifier_threshold', float('nan')):7.4f} {r['hits']:6d} {r['recall']:7.3f} {r['wrong_hit_share']:7.3f}"
        )


def main(argv: Sequence[str] | None = None) -> None:
    """Evaluate an artifact; ``--record`` stores the default operating point's metrics in its metadata."""
    p = argparse.ArgumentParser(prog="python -m costwise.cache.verify.evaluate", description=__doc__)
    p.add_argument("--pairs", type=Path, required=True)
    p.add_argument("--artifact", type=Path, default=ARTIFACT_DIR)
    p.add_argument("--split", choices=["held_out", "calibration", "train"], default="held_out")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--embed-backend", choices=["torch", "onnx", "onnx-int8"], default="torch", help="whose cosines")
    p.add_argument(
        "--calibration-space", default=None, help="use this space's calibration (default: the backend's own)"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    p.add_argument("--latency", type=int, default=0, metavar="N", help="also time N single-pair decisions")
    p.add_argument("--record", action="store_true", help="write held-out metrics into the artifact's metadata")
    args = p.parse_args(argv)
    space = args.calibration_space or space_of(args.embed_backend)
    verifier = Verifier.load(args.artifact, threads=args.threads, space=space)
    report = evaluate(verifier, args.pairs, args.split, embed_backend=args.embed_backend)
    if args.latency:
        sample = [(p.text_a, p.text_b) for p in load_pairs(args.pairs, args.split)[: args.latency]]
        report["latency"] = {"threads": args.threads, **latency(verifier, sample)}
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        _print_table(report)
        for r in report["at_recall"]:
            veto_note = " + vetoes" if r["vetoes"] else ""
            print(f"{r['scorer'] + veto_note:34s} recall {r['recall']:.1f}: wrong {r['wrong_hit_share']:.3f}")
        if "latency" in report:
            print(f"single-pair decide latency: {report['latency']}")
    if args.record and args.split == "held_out":
        meta_path = args.artifact / META_FILE
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        entry = meta if space == meta.get("space", BASE_SPACE) else meta["spaces"][space]
        entry["held_out_metrics"] = {
            k: report[k] for k in ("split", "embed_backend", "pairs", "positives", "default", "latency") if k in report
        }
        meta_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
