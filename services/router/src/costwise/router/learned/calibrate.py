"""Operating points: the cheapest thresholds that keep a quality target, chosen on labelled training outcomes.

Quality is relative, as in RouteLLM: the policy's accuracy divided by the strong model's accuracy on the same
prompts. A threshold that just meets the target on the training rows misses it on fresh data about half the
time, so each threshold is the one that meets the target in ``confidence`` of bootstrap resamples of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["CascadePoint", "Policy", "cascade_point", "evaluate", "evaluate_cascade", "router_threshold"]

Floats = NDArray[np.float64]
Bools = NDArray[np.bool_]


@dataclass(frozen=True)
class CascadePoint:
    """Straight to strong when ``p_small_ok < direct``; else weak, escalated when ``response_ok < escalate``."""

    direct: float
    escalate: float


@dataclass(frozen=True)
class Policy:
    """What a policy did on some prompts: accuracy and cost relative to sending everything to strong."""

    n: int
    accuracy: float
    strong_accuracy: float
    strong_call_share: float
    weak_call_share: float
    cost_reduction: float


def router_threshold(
    p_small_ok: Floats,
    weak_ok: Bools,
    strong_ok: Bools,
    quality: float,
    *,
    confidence: float = 0.95,
    resamples: int = 200,
    seed: int = 0,
) -> float:
    """Route to strong when ``p_small_ok < threshold``: the lowest threshold that keeps ``quality`` times strong
    accuracy in ``confidence`` of bootstrap resamples of these (training) rows."""
    order = np.argsort(p_small_ok, kind="stable")
    p_sorted = p_small_ok[order]
    counts = _bootstrap_counts(len(order), resamples, seed)[:, order]
    k = np.array([_min_strong(c, weak_ok[order], strong_ok[order], quality) for c in counts])
    return _cut(p_sorted, int(np.ceil(np.quantile(k, confidence))))


def cascade_point(
    p_small_ok: Floats,
    response_ok: Floats,
    weak_ok: Bools,
    strong_ok: Bools,
    quality: float,
    *,
    price_ratio: float,
    confidence: float = 0.95,
    resamples: int = 200,
    seed: int = 0,
    grid: int = 41,
) -> CascadePoint:
    """The cheapest (direct, escalate) pair on these rows: for each direct threshold on a grid, the escalation
    threshold that keeps ``quality`` in ``confidence`` of resamples; then the pair with the lowest cost."""
    counts = _bootstrap_counts(len(p_small_ok), resamples, seed)
    best: tuple[float, CascadePoint] | None = None
    for direct in np.unique(np.r_[-np.inf, np.quantile(p_small_ok, np.linspace(0, 1, grid))[1:-1]]):
        to_strong = p_small_ok < direct
        rest = np.flatnonzero(~to_strong)
        order = rest[np.argsort(response_ok[rest], kind="stable")]
        # rows sent straight to strong count as if they were the first ones escalated: same accuracy
        ranked = np.r_[np.flatnonzero(to_strong), order]
        k = [_min_strong(c[ranked], weak_ok[ranked], strong_ok[ranked], quality) for c in counts]
        escalate = _cut(response_ok[ranked], int(np.ceil(np.quantile(k, confidence))), skip=int(to_strong.sum()))
        point = CascadePoint(direct=float(direct), escalate=escalate)
        cost = evaluate_cascade(point, p_small_ok, response_ok, weak_ok, strong_ok, price_ratio).cost_reduction
        if best is None or -cost < best[0]:
            best = (-cost, point)
    assert best is not None
    return best[1]


def evaluate(to_strong: Bools, weak_ok: Bools, strong_ok: Bools, price_ratio: float, weak_calls: Bools) -> Policy:
    """Accuracy and cost of a policy that calls strong on ``to_strong`` and weak on ``weak_calls``."""
    accuracy = np.where(to_strong, strong_ok, weak_ok).mean()
    cost = to_strong.mean() + weak_calls.mean() / price_ratio
    return Policy(
        n=len(to_strong),
        accuracy=float(accuracy),
        strong_accuracy=float(strong_ok.mean()),
        strong_call_share=float(to_strong.mean()),
        weak_call_share=float(weak_calls.mean()),
        cost_reduction=float(1 - cost),
    )


def evaluate_cascade(
    point: CascadePoint, p_small_ok: Floats, response_ok: Floats, weak_ok: Bools, strong_ok: Bools, price_ratio: float
) -> Policy:
    direct = p_small_ok < point.direct
    escalated = ~direct & (response_ok < point.escalate)
    return evaluate(direct | escalated, weak_ok, strong_ok, price_ratio, weak_calls=~direct)


def _bootstrap_counts(n: int, resamples: int, seed: int) -> NDArray[np.int64]:
    rng = np.random.default_rng(seed)
    return np.vstack([np.ones(n, dtype=np.int64), rng.multinomial(n, np.full(n, 1 / n), size=resamples)])


def _min_strong(counts: NDArray[np.int64], weak_ok: Bools, strong_ok: Bools, quality: float) -> int:
    """How many of the rows, in the given order, must go to strong for the (weighted) target to hold."""
    total = counts.sum()
    target = quality * (counts * strong_ok).sum()
    gains = np.cumsum(counts * (strong_ok.astype(np.int64) - weak_ok))
    reached = (counts * weak_ok).sum() + np.r_[0, gains] >= target - 1e-9 * total
    return int(np.argmax(reached)) if reached.any() else len(counts)


def _cut(sorted_scores: Floats, k: int, *, skip: int = 0) -> float:
    """A threshold with exactly the first ``k`` scores below it (``skip`` leading rows are not thresholded)."""
    if k <= skip:
        return -np.inf
    if k >= len(sorted_scores):
        return np.inf
    below, above = sorted_scores[k - 1], sorted_scores[k]
    return float((below + above) / 2) if above > below else float(np.nextafter(above, np.inf))
