"""Calibration of the hit verifier: the logit+cosine combiner and the precision → threshold table, per space.

Everything here is fitted on CALIBRATION-split pairs (see ``data.SPLIT_RULE``; a pairs file may name its own
split per row), never on training or held-out pairs.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from costwise.embed import space_of

from .data import Pair, load_pairs
from .lexical import veto
from .metrics import calibration_table, cross_validated, fit_logistic
from .model import PairClassifier, load_tokenizer
from .similarity import cosine_similarities
from .verifier import Verifier

__all__ = ["BASE_PRE_THRESHOLD", "calibrate", "calibrate_space", "default_target", "load_calibration"]

BASE_PRE_THRESHOLD = 0.80
"""The fp32 cosine pre-threshold when none is given (another space's default lets as many pairs through)."""


def calibrate(
    verifier: Verifier, pairs: Sequence[Pair], cosine: NDArray[np.float64], table_on: Sequence[bool] | None = None
) -> dict[str, Any]:
    """Fit the logit+cosine combiner and the threshold table on held-aside pairs, through the full accept path.

    Thresholds come from out-of-fold combiner scores, so they are not tuned on the pairs that fitted it.
    ``cosine``: the pairs' embedding cosines in the space the verifier will be used with. ``table_on``: the
    pairs the threshold table is computed on (default all): precision means precision on those pairs.
    """
    texts = [(p.text_a, p.text_b) for p in pairs]
    features = np.c_[np.asarray(verifier.logits(texts)), cosine]
    labels = np.asarray([p.label for p in pairs], dtype=np.float64)
    weights = fit_logistic(features, labels)
    checked = zip(texts, cosine, strict=True)
    eligible = np.asarray(
        [c >= verifier.min_similarity and veto(a, b, verifier.checks) is None for (a, b), c in checked]
    )
    on = np.ones(len(pairs), dtype=bool) if table_on is None else np.asarray(table_on, dtype=bool)
    scores = cross_validated(features, labels)
    table = calibration_table(labels[on].astype(int).tolist(), scores[on].tolist(), eligible[on].tolist())
    return {
        "split": "calibration",
        "pairs": len(pairs),
        "positives": int(labels.sum()),
        "table_pairs": int(on.sum()),
        "table_positives": int(labels[on].sum()),
        "combiner": {"logit": weights[0], "cosine": weights[1], "bias": weights[2]},
        "table": table,
    }


def calibrate_space(model: PairClassifier, meta: dict[str, Any], args: argparse.Namespace, command: str) -> None:
    """A pre-threshold, combiner and table for another backend's cosines, under ``meta["spaces"][space]``.

    The cross-encoder is unchanged; what moves with the vectors is the cosine it is combined with and cut by.
    """
    pairs, table_on = load_calibration(args)
    texts = [(p.text_a, p.text_b) for p in pairs]
    cosine = np.asarray(cosine_similarities(texts, backend=args.embed_backend))
    if args.min_similarity is None:  # as many calibration pairs reach the verifier as with fp32 vectors
        base = np.asarray(cosine_similarities(texts, backend="onnx"))
        share = float((base >= BASE_PRE_THRESHOLD).mean())
        min_similarity = round(float(np.quantile(cosine, 1.0 - share)), 4)
    else:
        min_similarity = args.min_similarity
    entry: dict[str, Any] = {"embed_backend": args.embed_backend, "min_similarity": min_similarity}
    entry["near_repeat_min_similarity"] = args.near_repeat_min_similarity
    entry["calibration_command"] = command
    verifier = Verifier(model.eval(), load_tokenizer(), {**meta, **entry})
    entry["calibration"] = calibrate(verifier, pairs, cosine, table_on)
    entry["default_target_precision"] = default_target(entry["calibration"]["table"], args)
    meta.setdefault("spaces", {})[space_of(args.embed_backend)] = entry


def load_calibration(args: argparse.Namespace) -> tuple[list[Pair], list[bool] | None]:
    """Every file's calibration pairs, and which of them the threshold table is fitted on (``--table-pairs``)."""
    loaded = [(path, load_pairs(path, "calibration")) for path in args.pairs]
    pairs = [pair for _, found in loaded for pair in found]
    if args.table_pairs is None:
        return pairs, None
    return pairs, [path == args.table_pairs for path, found in loaded for _ in found]


def default_target(table: Sequence[dict[str, float]], args: argparse.Namespace) -> float:
    """``--default-target-precision``, else the strictest calibrated target that keeps ``--min-recall``."""
    if args.default_target_precision is not None:
        return float(args.default_target_precision)
    keeping = [r["target_precision"] for r in table if r["recall"] >= args.min_recall]
    if not keeping:
        raise SystemExit(f"no calibrated target keeps recall >= {args.min_recall}; pass --default-target-precision")
    return float(max(keeping))
