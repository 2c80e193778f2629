"""Same-intent training pairs for the semantic cache's hit verifier, from FAQ logs (issue 16).

``python -m costwise.bench.verifier_pairs --data ../shared/data --out faq-pairs.json`` writes a JSON list of
``{"text_a", "text_b", "label", "split", "kind"}`` that ``python -m costwise.cache.verify.train --pairs`` reads
beside Quora's pairs (a row's ``split`` overrides the pair-hash rule).

What is used, and what never is (held-out discipline):

* **Questions.** banking77's ``train.csv`` and Bitext's training file, intents of the trap set's ``dev`` half
  only (:func:`.trap_set.intent_split`). Never: banking77's ``test.csv``, Bitext's validation and testing files,
  any ``held_out`` intent — what ``cache-traps --pairs <held_out>`` and ``cache-replay`` report on.
* **Split.** By intent again: ``sha256("calibration:<source>:<intent>") % 4 == 0`` → ``calibration`` (the
  verifier's combiner and thresholds are fitted there, on intents the model never trained on), else ``train``.
* **Labels.** Two questions share an answer when their :func:`.workload.answer_key` is equal (the intent; for an
  intent whose answer depends on a named value, the intent with its values).
* **Kinds.** ``neighbour``: each question with its ``--neighbours`` nearest questions of the same answer and its
  ``--neighbours`` nearest of other answers (MiniLM cosine, within one source and split): look-alike questions
  of other intents are the hard negatives a cache meets. ``same_answer``: one random same-answer question past
  those (a rewording the index ranks lower).
  ``trap:<rule>``: one :data:`.trap_rules.TRAP_RULES` perturbation, label 0. Positives a lexical veto would
  refuse are dropped (a number the sides do not share, say): the model never learns to read past what the
  checks stand for.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import msgspec
import numpy as np
from numpy.typing import NDArray

from costwise.cache.verify import veto
from costwise.embed import Backend, Embedder

from .data_sources import Utterance
from .trap_rules import TRAP_RULES
from .trap_set import intent_split
from .workload import answer_key

__all__ = ["VerifierPair", "build", "calibration_intent", "main"]

Split = Literal["train", "calibration"]
_BANKING77 = ("query_logs/banking77/train.csv", "text", "category")
_BITEXT = ("query_logs/bitext_intent/Bitext_Sample_Customer_Service_Training_Dataset.csv", "utterance", "intent")


class VerifierPair(msgspec.Struct, frozen=True):
    """One training or calibration pair (label 1: one answer serves both questions)."""

    text_a: str
    text_b: str
    label: int
    split: str
    kind: str


def calibration_intent(source: str, intent: str) -> bool:
    """Whether a dev-side intent is kept for calibration (a quarter of them, by hash)."""
    return int(hashlib.sha256(f"calibration:{source}:{intent}".encode()).hexdigest(), 16) % 4 == 0


def read_pool(data: Path, source: str) -> dict[Split, list[Utterance]]:
    """A source's dev-side training questions, per split, sorted."""
    name, text_col, intent_col = _BANKING77 if source == "banking77" else _BITEXT
    pools: dict[Split, set[Utterance]] = {"train": set(), "calibration": set()}
    with open(data / name, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            text, intent = row[text_col].strip(), row[intent_col]
            if text and intent_split(source, intent) == "dev":
                value = (row.get("entity_value") or "").strip()
                split: Split = "calibration" if calibration_intent(source, intent) else "train"
                pools[split].add(Utterance(text, intent, (value,) if value else ()))
    return {split: sorted(found) for split, found in pools.items()}


def _pairs(
    source: str, split: Split, pool: list[Utterance], vectors: NDArray[np.float32], neighbours: int, seed: int
) -> Iterator[VerifierPair]:
    rng = random.Random(f"{seed}:{source}:{split}")
    keys = [answer_key(source, u) for u in pool]
    by_key: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        by_key.setdefault(key, []).append(i)
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    for i, u in enumerate(pool):
        order = [int(j) for j in np.argsort(-sims[i], kind="stable")[:-1]]
        same = [j for j in order if keys[j] == keys[i]]
        other = [j for j in order if keys[j] != keys[i]]
        partners = [(j, "neighbour") for j in same[:neighbours] + other[:neighbours]]
        if len(same) > neighbours:  # a rewording the index ranks lower
            partners.append((rng.choice(same[neighbours:]), "same_answer"))
        for j, kind in partners:
            yield VerifierPair(pool[j].text, u.text, int(keys[i] == keys[j]), split, kind)
        rule = rng.choice(sorted(TRAP_RULES))
        trap = TRAP_RULES[rule](u.text, rng)
        if trap is not None and trap != u.text:
            yield VerifierPair(u.text, trap, 0, split, f"trap:{rule}")


def build(data: Path, *, neighbours: int = 3, seed: int = 16, backend: Backend = "onnx-int8") -> list[VerifierPair]:
    """Every pair of both sources and splits, deduplicated (a pair and its reverse count once)."""
    embedder = Embedder.load(threads=1, backend=backend)
    out: list[VerifierPair] = []
    seen: set[frozenset[str]] = set()
    try:
        for source in ("banking77", "bitext"):
            for split, pool in read_pool(data, source).items():
                vectors = np.asarray(embedder.embed_many([u.text for u in pool]), dtype=np.float32)
                for pair in _pairs(source, split, pool, vectors, neighbours, seed):
                    key = frozenset((pair.text_a, pair.text_b))
                    if key in seen or (pair.label == 1 and veto(pair.text_b, pair.text_a) is not None):
                        continue
                    seen.add(key)
                    out.append(pair)
    finally:
        embedder.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m costwise.bench.verifier_pairs", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument(
        "--neighbours",
        type=int,
        default=3,
        help="nearest same-answer and other-answer questions paired with each question",
    )
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--embed-backend", choices=["torch", "onnx", "onnx-int8"], default="onnx-int8")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    pairs = build(args.data, neighbours=args.neighbours, seed=args.seed, backend=args.embed_backend)
    args.out.write_bytes(msgspec.json.encode(pairs))
    counts = Counter(f"{p.split}:{p.kind.split(':')[0]}:{p.label}" for p in pairs)
    print(json.dumps({"out": str(args.out), "pairs": len(pairs), "counts": dict(sorted(counts.items()))}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
