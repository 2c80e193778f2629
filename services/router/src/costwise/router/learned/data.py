"""Labelled outcomes in RouteLLM's CSV format: ``prompt``, one boolean column per model, optional ``<model>_response``.

A folder may hold one CSV or many (MMLU ships one per subject); rows keep the file's stem as their ``group``.
"""

from __future__ import annotations

import csv
import hashlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

__all__ = ["Outcomes", "load_routellm", "train_mask"]

_RESPONSE = "_response"
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no", ""}


@dataclass(frozen=True)
class Outcomes:
    """Per-prompt correctness of a weak and a strong model (and the weak model's responses, when recorded)."""

    prompts: list[str]
    weak_ok: NDArray[np.bool_]
    strong_ok: NDArray[np.bool_]
    weak: str
    strong: str
    groups: list[str]
    weak_responses: list[str] | None

    def __len__(self) -> int:
        return len(self.prompts)

    def subset(self, mask: NDArray[np.bool_]) -> Outcomes:
        idx = np.flatnonzero(mask)
        return Outcomes(
            prompts=[self.prompts[i] for i in idx],
            weak_ok=self.weak_ok[idx],
            strong_ok=self.strong_ok[idx],
            weak=self.weak,
            strong=self.strong,
            groups=[self.groups[i] for i in idx],
            weak_responses=None if self.weak_responses is None else [self.weak_responses[i] for i in idx],
        )


def load_routellm(path: Path, *, weak: str | None = None, strong: str | None = None) -> Outcomes:
    """Every ``*.csv`` under ``path`` (or the one file ``path``). Without ``weak``/``strong`` the model with the
    lower accuracy is the weak one. Raises ``ValueError`` on a file that does not fit the format."""
    files = [path] if path.is_file() else sorted(path.rglob("*.csv"))
    if not files:
        raise ValueError(f"no CSV files under {path}")
    rows: list[dict[str, str]] = []
    groups: list[str] = []
    models: list[str] | None = None
    csv.field_size_limit(sys.maxsize)  # professional-law prompts run to several kB
    for file in files:
        with file.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            found = _models(reader.fieldnames, file)
            if models is not None and set(found) != set(models):
                raise ValueError(f"{file}: models {found} differ from the other files' {models}")
            models = found
            for row in reader:
                rows.append(row)
                groups.append(file.stem)
    assert models is not None
    labels = {m: np.array([_bool(r[m], m) for r in rows], dtype=bool) for m in models}
    weak, strong = _pick(labels, weak, strong)
    if not rows:
        raise ValueError(f"no rows under {path}")
    with_responses = all(r.get(f"{weak}{_RESPONSE}") is not None for r in rows)
    return Outcomes(
        prompts=[r["prompt"] for r in rows],
        weak_ok=labels[weak],
        strong_ok=labels[strong],
        weak=weak,
        strong=strong,
        groups=groups,
        weak_responses=[r[f"{weak}{_RESPONSE}"] or "" for r in rows] if with_responses else None,
    )


def train_mask(prompts: list[str], train_share: float = 0.5, *, seed: int = 0) -> NDArray[np.bool_]:
    """A deterministic split by a hash of the prompt, so a duplicated prompt never sits on both sides."""
    cut = int(train_share * 2**32)
    digests = (hashlib.sha256(f"{seed}:{p}".encode()).digest()[:4] for p in prompts)
    return np.array([int.from_bytes(d, "big") < cut for d in digests], dtype=bool)


def _models(header: Sequence[str] | None, file: Path) -> list[str]:
    if not header or "prompt" not in header:
        raise ValueError(f"{file}: no 'prompt' column")
    models = [c for c in header if c != "prompt" and not c.endswith(_RESPONSE)]
    if len(models) < 2:
        raise ValueError(f"{file}: need at least two model columns, found {models}")
    return models


def _bool(value: str | None, column: str) -> bool:
    text = (value or "").strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"column {column!r}: {value!r} is not a boolean")


def _pick(labels: dict[str, NDArray[np.bool_]], weak: str | None, strong: str | None) -> tuple[str, str]:
    for name in (weak, strong):
        if name is not None and name not in labels:
            raise ValueError(f"no model column {name!r}; have {sorted(labels)}")
    ranked = sorted(labels, key=lambda m: float(labels[m].mean()))
    weak = weak or next(m for m in ranked if m != strong)
    strong = strong or next(m for m in reversed(ranked) if m != weak)
    return weak, strong
