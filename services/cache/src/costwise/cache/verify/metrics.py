"""Precision/recall of hit decisions, and the calibration table that maps a target precision to a threshold."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

__all__ = ["calibration_table", "cross_validated", "fit_logistic", "operating_point", "threshold_for"]

TARGETS: tuple[float, ...] = tuple(round(0.80 + 0.005 * i, 3) for i in range(40))
"""Precisions the table is computed for: 0.800, 0.805, …, 0.995."""


def operating_point(labels: Sequence[int], accepted: Sequence[bool]) -> dict[str, float | int]:
    """Hits, recall (true hits / all positives) and wrong-hit share (false hits / hits) of a decision set."""
    y = np.asarray(labels, dtype=bool)
    hit = np.asarray(accepted, dtype=bool)
    hits, true_hits = int(hit.sum()), int((hit & y).sum())
    return {
        "hits": hits,
        "recall": true_hits / max(int(y.sum()), 1),
        "wrong_hit_share": (hits - true_hits) / hits if hits else 0.0,
    }


def fit_logistic(features: NDArray[np.float64], labels: NDArray[np.float64], *, l2: float = 1e-3) -> list[float]:
    """Weights (last one the bias) of an L2-regularised logistic regression, by Newton's method.

    A few features only, so plain numpy keeps scikit-learn out of the service's dependencies.
    """
    x = np.c_[features, np.ones(len(features))]
    w = np.zeros(x.shape[1])
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-x @ w))
        grad = x.T @ (p - labels) + l2 * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + l2 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return [float(v) for v in w]


def cross_validated(features: NDArray[np.float64], labels: NDArray[np.float64], folds: int = 5) -> NDArray[np.float64]:
    """Out-of-fold logistic probabilities (fold = index mod ``folds``): thresholds picked on these are honest."""
    out = np.zeros(len(labels))
    fold = np.arange(len(labels)) % folds
    for k in range(folds):
        w = np.asarray(fit_logistic(features[fold != k], labels[fold != k]))
        out[fold == k] = 1.0 / (1.0 + np.exp(-(features[fold == k] @ w[:-1] + w[-1])))
    return out


def calibration_table(
    labels: Sequence[int],
    scores: Sequence[float],
    eligible: Sequence[bool],
    targets: Sequence[float] = TARGETS,
    *,
    min_hits: int = 50,
) -> list[dict[str, float]]:
    """For each target precision, the lowest score threshold meeting it, with the recall that buys.

    ``eligible`` marks pairs that reach the verifier at all (cosine pre-threshold passed, no veto), so the
    thresholds hold for the whole accept path, not just the model. Cuts with fewer than ``min_hits`` hits
    are ignored (a precision measured on a handful of pairs means nothing); targets no cut meets are left out.
    """
    y = np.asarray(labels, dtype=bool)
    s = np.where(np.asarray(eligible, dtype=bool), np.asarray(scores, dtype=np.float64), -np.inf)
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    true_hits = np.cumsum(y_sorted)
    hits = np.arange(1, len(s) + 1)
    precision = true_hits / hits
    # Only cut between distinct scores (a threshold cannot split ties) and among eligible pairs.
    valid = np.isfinite(s_sorted) & np.append(s_sorted[1:] < s_sorted[:-1], True) & (hits >= min_hits)
    table = []
    for target in targets:
        ok = np.flatnonzero(valid & (precision >= target))
        if ok.size == 0:
            continue
        i = int(ok[-1])  # the deepest cut still meeting the target: most recall
        table.append(
            {
                "target_precision": float(target),
                "hits": int(hits[i]),
                "threshold": float(s_sorted[i]),
                "precision": float(precision[i]),
                "recall": float(true_hits[i] / max(int(y.sum()), 1)),
            }
        )
    return table


def threshold_for(table: Sequence[dict[str, float]], target_precision: float) -> float:
    """The threshold of the least strict calibrated target that is at least ``target_precision``."""
    for row in sorted(table, key=lambda r: r["target_precision"]):
        if row["target_precision"] >= target_precision - 1e-9:
            return float(row["threshold"])
    best = max((r["target_precision"] for r in table), default=0.0)
    raise ValueError(f"target precision {target_precision} exceeds what calibration reached ({best})")
