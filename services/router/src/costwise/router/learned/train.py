"""Training from labelled outcomes (scikit-learn, imported only here): logistic heads, out-of-fold scores.

The label is "the small tier is good enough": it answered correctly, or the large tier would not have either.
Sending a prompt both tiers fail to the large one buys no quality, so it should not count against the small one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .calibrate import router_threshold
from .model import LogisticHead, RoutePredictor

__all__ = ["QUALITIES", "fit_head", "out_of_fold", "small_good_enough", "train_router"]

QUALITIES: tuple[float, ...] = tuple(round(0.80 + i / 100, 2) for i in range(21))


def small_good_enough(weak_ok: NDArray[np.bool_], strong_ok: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """The training label: the weak answer was right, or the strong one was wrong too."""
    return weak_ok | ~strong_ok


def fit_head(x: NDArray[Any], y: NDArray[np.bool_], *, c: float = 0.1) -> LogisticHead:
    """An L2 logistic regression on standardized features, exported as plain arrays."""
    from sklearn.linear_model import LogisticRegression

    mean = x.mean(axis=0)
    scale = np.maximum(x.std(axis=0), 1e-6)
    model = LogisticRegression(C=c, max_iter=5000).fit((x - mean) / scale, y)
    return LogisticHead(model.coef_[0].astype(np.float64), float(model.intercept_[0]), mean, scale)


def out_of_fold(
    x: NDArray[Any], y: NDArray[np.bool_], *, c: float = 0.1, folds: int = 5, seed: int = 0
) -> NDArray[np.float64]:
    """Each row's score from a head that never saw it: what calibration must use, as in-sample scores of a
    384-feature model are far too confident."""
    from sklearn.model_selection import StratifiedKFold

    minority = int(min(y.sum(), (~y).sum()))
    if minority < 2:
        raise ValueError(f"cannot train on {len(y)} rows with {minority} of one outcome; need at least 2 of each")
    scores = np.zeros(len(y))
    split = StratifiedKFold(min(folds, minority), shuffle=True, random_state=seed).split(x, y)
    for fit_rows, held in split:
        scores[held] = fit_head(x[fit_rows], y[fit_rows], c=c).predict(x[held])
    return scores


def train_router(
    x: NDArray[Any],
    weak_ok: NDArray[np.bool_],
    strong_ok: NDArray[np.bool_],
    *,
    c: float = 0.1,
    qualities: Sequence[float] = QUALITIES,
    meta: dict[str, Any] | None = None,
) -> tuple[RoutePredictor, NDArray[np.float64]]:
    """A predictor fit on all rows given, its thresholds calibrated on their out-of-fold scores (also returned)."""
    label = small_good_enough(weak_ok, strong_ok)
    oof = out_of_fold(x, label, c=c)
    thresholds = np.array([router_threshold(oof, weak_ok, strong_ok, q) for q in qualities])
    # a higher quality never needs a lower threshold; bootstrap noise could say otherwise
    thresholds = np.maximum.accumulate(np.clip(thresholds, 0.0, 1.0))
    predictor = RoutePredictor(fit_head(x, label, c=c), np.array(qualities, dtype=np.float64), thresholds, meta or {})
    return predictor, oof
