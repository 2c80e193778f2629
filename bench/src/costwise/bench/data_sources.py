"""Readers for the third-party data the benchmarks replay (``../shared/data``), and the popularity skew.

``cache-replay`` and ``workload`` both replay labelled query logs under a Zipf skew; the readers and the skew
live here so both draw from one definition. Paths are the layout of ``../shared/data`` (its README names each
dataset's source and license); a missing file is an error naming the path, never an empty dataset.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

# Query logs: folder under the data root and the files that make up the log (splits are pooled: a workload
# wants every phrasing there is, and no model is trained on them here).
QUERY_LOGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "banking77": ("query_logs/banking77", ("train.csv", "test.csv")),
    "bitext": (
        "query_logs/bitext_intent",
        tuple(f"Bitext_Sample_Customer_Service_{split}_Dataset.csv" for split in ("Training", "Validation", "Testing")),
    ),
}
ROUTELLM = "router/routellm"
# RouteLLM outcome sets: path under ROUTELLM, and the file of prompts RouteLLM excludes from it (or None).
OUTCOMES: dict[str, tuple[str, str | None]] = {
    "gsm8k": ("gsm8k_dev_responses.csv", None),
    "mmlu": ("mmlu_responses", "mmlu_contaminated_prompts.jsonl"),
}


@dataclass(frozen=True, order=True)
class Utterance:
    """One query of a log: its text, its intent and the entity values annotated in it (Bitext; else none)."""

    text: str
    intent: str
    entities: tuple[str, ...] = ()


def read_query_log(root: Path, source: str) -> list[Utterance]:
    """Every distinct utterance of a query log (all its splits that are present), sorted for reproducibility."""
    if source not in QUERY_LOGS:
        raise ValueError(f"unknown query log {source!r} (known: {', '.join(QUERY_LOGS)})")
    folder, names = QUERY_LOGS[source]
    files = [root / folder / name for name in names if (root / folder / name).is_file()]
    if not files:
        raise FileNotFoundError(f"{source}: none of {', '.join(names)} under {root / folder}")
    found: set[Utterance] = set()
    for file in files:
        with file.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                text = (row.get("text") or row.get("utterance") or "").strip()
                # Bitext has both: "intent" (27 values) is the fine label, "category" (11) the coarse one.
                intent = row.get("intent") or row.get("category") or ""
                value = (row.get("entity_value") or "").strip()
                if text and intent:
                    found.add(Utterance(text, intent, (value,) if value else ()))
    return sorted(found)


def zipf_probs(n: int, s: float) -> NDArray[np.float64]:
    """P(rank r) ∝ r^-s for ranks 1..n, normalised."""
    weights = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** s
    return weights / weights.sum()


@dataclass(frozen=True)
class Outcome:
    """One prompt with a weak and a strong model's correctness and, where recorded, their responses."""

    prompt: str
    weak_ok: bool
    strong_ok: bool
    weak_response: str | None = None
    strong_response: str | None = None


def read_outcomes(root: Path, source: str) -> tuple[list[Outcome], int]:
    """A RouteLLM outcome set (``gsm8k``, ``mmlu``) minus its contaminated prompts; also how many were excluded.
    Correctness and the weak/strong choice are the router's own reader's (``load_routellm``)."""
    from costwise.router.learned import load_routellm  # the router package is heavy; only this reader needs it

    if source not in OUTCOMES:
        raise ValueError(f"unknown outcome set {source!r} (known: {', '.join(OUTCOMES)})")
    name, contaminated = OUTCOMES[source]
    path = root / ROUTELLM / name
    if not path.exists():
        raise FileNotFoundError(f"{source}: {path} not found")
    data = load_routellm(path)
    strong = _column(path, f"{data.strong}_response") if data.weak_responses is not None else None
    excluded = _eval_prompts(root / ROUTELLM / contaminated) if contaminated else set()
    outcomes = [
        Outcome(
            prompt,
            bool(data.weak_ok[i]),
            bool(data.strong_ok[i]),
            None if data.weak_responses is None else data.weak_responses[i],
            None if strong is None else strong[i],
        )
        for i, prompt in enumerate(data.prompts)
        if prompt.strip() not in excluded
    ]
    return outcomes, len(data.prompts) - len(outcomes)


def _column(path: Path, column: str) -> list[str]:
    """One column of a single CSV, in row order (``load_routellm`` keeps only the weak model's responses)."""
    csv.field_size_limit(sys.maxsize)  # recorded responses run to several kB
    with path.open(newline="", encoding="utf-8") as fh:
        return [row.get(column) or "" for row in csv.DictReader(fh)]


def _eval_prompts(path: Path) -> set[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: refusing to build without the contamination list")
    with path.open(encoding="utf-8") as fh:
        return {json.loads(line)["eval_prompt"].strip() for line in fh if line.strip()}
