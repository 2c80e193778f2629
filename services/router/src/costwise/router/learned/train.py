"""Training from labelled outcomes (scikit-learn): logistic heads, out-of-fold scores, the stacked router.

The label is "the small tier is good enough": it answered correctly, or the large tier would not have either.
Sending a prompt both tiers fail to the large one buys no quality, so it should not count against the small one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from .calibrate import router_threshold
from .model import LogisticHead, RoutePredictor, TextHead, design_matrix, sigmoid, text_counts, tfidf

__all__ = ["QUALITIES", "cross_fit", "small_good_enough", "train_router"]

QUALITIES: tuple[float, ...] = tuple(round(0.80 + i / 100, 2) for i in range(21))


def small_good_enough(weak_ok: NDArray[np.bool_], strong_ok: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """The training label: the weak answer was right, or the strong one was wrong too."""
    return weak_ok | ~strong_ok


def cross_fit(
    x: NDArray[Any] | sp.csr_matrix, y: NDArray[np.bool_], *, c: float = 0.1, folds: int = 5, seed: int = 0
) -> tuple[NDArray[np.float64], LogisticHead]:
    """Out-of-fold scores (each row scored by a head that never saw it) and the head whose logit is the mean of
    the fold heads' logits. Thresholds picked on the out-of-fold scores then mean the same on new data; a head
    refit on all rows would score more confidently than the folds did, and shift every threshold. Dense ``x``
    is standardized first; sparse ``x`` (TF-IDF) is used as it is."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    minority = int(min(y.sum(), (~y).sum()))
    if minority < 2:
        raise ValueError(f"cannot train on {len(y)} rows with {minority} of one outcome; need at least 2 of each")
    if sp.issparse(x):
        mean, scale, z = np.zeros(x.shape[1]), np.ones(x.shape[1]), x
    else:
        mean, scale = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-6)
        z = (x - mean) / scale
    scores, weights, bias = np.zeros(len(y)), np.zeros(x.shape[1]), 0.0
    splits = list(StratifiedKFold(min(folds, minority), shuffle=True, random_state=seed).split(np.zeros(len(y)), y))
    for fit_rows, held in splits:
        model = LogisticRegression(C=c, max_iter=5000).fit(z[fit_rows], y[fit_rows])
        scores[held] = model.predict_proba(z[held])[:, 1]
        weights += model.coef_[0] / len(splits)
        bias += float(model.intercept_[0]) / len(splits)
    return scores, LogisticHead(weights, bias, mean, scale)


def train_router(
    vectors: NDArray[np.float32],
    prompts: list[str],
    weak_ok: NDArray[np.bool_],
    strong_ok: NDArray[np.bool_],
    *,
    text_c: float = 1.0,
    vector_c: float = 0.03,
    qualities: Sequence[float] = QUALITIES,
    meta: dict[str, Any] | None = None,
) -> tuple[RoutePredictor, NDArray[np.float64]]:
    """The stacked predictor for these rows, with its thresholds calibrated on the rows' out-of-fold scores
    (returned too). The stacker has three parameters and is fit on out-of-fold logits."""
    from sklearn.linear_model import LogisticRegression

    label = small_good_enough(weak_ok, strong_ok)
    counts = text_counts(prompts)
    idf = np.log((1 + len(prompts)) / (1 + np.asarray((counts > 0).sum(axis=0)).ravel())) + 1
    text_oof, text_head = cross_fit(tfidf(counts, idf), label, c=text_c)
    vector_oof, vector_head = cross_fit(design_matrix(vectors, prompts), label, c=vector_c)
    logits = np.c_[_logit(text_oof), _logit(vector_oof)]
    stacker = LogisticRegression().fit(logits, label)
    stack = np.r_[stacker.coef_[0], stacker.intercept_[0]].astype(np.float64)
    oof = sigmoid(logits @ stack[:2] + stack[2])
    thresholds = np.array([router_threshold(oof, weak_ok, strong_ok, q) for q in qualities])
    # a higher quality never needs a lower threshold; bootstrap noise could say otherwise
    thresholds = np.maximum.accumulate(np.clip(thresholds, 0.0, 1.0))
    text = TextHead(idf, text_head.weights, text_head.bias)
    predictor = RoutePredictor(text, vector_head, stack, np.array(qualities), thresholds, meta or {})
    return predictor, oof


def _logit(p: NDArray[np.float64]) -> NDArray[np.float64]:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.asarray(np.log(p / (1 - p)))
