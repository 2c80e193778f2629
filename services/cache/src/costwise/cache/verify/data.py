"""Labelled question pairs and the deterministic split every train/evaluate run agrees on."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["SPLIT_RULE", "Pair", "Split", "load_pairs", "split_of"]

Split = Literal["train", "calibration", "held_out"]

SPLIT_RULE = (
    "h = int(sha256(text_a + '\\n' + text_b).hexdigest(), 16); "
    "held_out if h % 5 == 0, else calibration if (h // 5) % 8 == 0, else train"
)
"""Held-out is the brief's rule; calibration reuses the same hash (h // 5 is independent of h % 5)."""


@dataclass(frozen=True, slots=True)
class Pair:
    """One labelled pair: ``label`` is 1 when both texts ask the same question."""

    text_a: str
    text_b: str
    label: int


def split_of(text_a: str, text_b: str) -> Split:
    """Which split a pair belongs to (see :data:`SPLIT_RULE`)."""
    h = int(hashlib.sha256((text_a + "\n" + text_b).encode()).hexdigest(), 16)
    if h % 5 == 0:
        return "held_out"
    return "calibration" if (h // 5) % 8 == 0 else "train"


def load_pairs(path: Path, split: Split | None = None) -> list[Pair]:
    """Read a JSON list of ``{"text_a", "text_b", "label"}`` objects, optionally keeping one split.

    A row may name its own ``"split"`` (pairs built by intent, e.g. ``costwise.bench.verifier_pairs``); the others
    go by :data:`SPLIT_RULE`.
    """
    rows = json.loads(Path(path).read_text(encoding="utf-8"))
    if split is None:
        return [Pair(str(r["text_a"]), str(r["text_b"]), int(r["label"])) for r in rows]
    return [
        Pair(str(r["text_a"]), str(r["text_b"]), int(r["label"]))
        for r in rows
        if r.get("split", split_of(str(r["text_a"]), str(r["text_b"]))) == split
    ]
