"""Build the semantic-cache trap set from the public data in ``../shared/data`` (nothing generated is committed).

``python -m costwise.bench.trap_set --data ../shared/data --split dev --out traps-dev.jsonl`` writes JSON lines
``{"text_a", "text_b", "label", "category"}``: ``text_a`` is what the cache holds, ``text_b`` the new question;
``label`` 1 = the cached answer is right for it (should hit), 0 = a trap.

Sources: banking77 (PolyAI, CC BY 4.0; ``query_logs/banking77``), the Bitext customer-support intent dataset
(CDLA-Sharing-1.0; ``query_logs/bitext_intent``, training file) and Quora Question Pairs (via GPTCache's
benchmark file; ``semantic_pairs/qqp_dev.json``).

Rules (see :mod:`.trap_rules` for each perturbation):

* **Split.** banking77 and Bitext questions go to ``dev`` or ``held_out`` by intent
  (``sha256("<source>:<intent>")`` even → dev), so no intent, and no question, is in both. Quora questions go by
  the verifier's own split rule (``costwise.cache.verify.SPLIT_RULE``): its ``calibration`` split → dev, its
  ``held_out`` split → held_out; its training split is never used.
* **Should hit (label 1).** ``paraphrase``: for a banking77/Bitext question, the other question of the same
  intent sharing the most words with it (Jaccard of lower-cased word sets; the nearest rewording a cache would
  meet), skipped if the wording is the same or if numbers / Bitext entity values differ. Near-repeats
  ``typo``, ``word_order``, ``politeness``, ``contraction``, ``case_punctuation``: one rule applied to a question.
* **Traps (label 0).** ``negation``, ``entity_swap``, ``number``, ``scope``: one rule applied to a question;
  Bitext's annotated entity values are also swapped for another value of their type (person, city, country,
  account type → ``entity_swap``; order id, invoice id, refund amount → ``number``).
* **Sampling.** Up to ``--per-category`` pairs per category, drawn in equal shares from each source the rule
  applies to, with ``random.Random(seed)``; every pair is written once.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import random
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import msgspec

from .trap_rules import NEAR_REPEAT_RULES, TRAP_RULES, swap_entity_value

__all__ = ["CATEGORIES", "Question", "TrapPair", "build", "intent_split", "load_questions", "read_pairs"]

SplitName = Literal["dev", "held_out"]
CATEGORIES: tuple[str, ...] = ("paraphrase", *NEAR_REPEAT_RULES, *TRAP_RULES)
"""Every category, should-hit first."""
_ENTITY_KINDS = {"person_name", "delivery_city", "delivery_country", "account_type"}
_NUMBER_KINDS = {"order_id", "invoice_id", "refund_amount"}


class TrapPair(msgspec.Struct, frozen=True):
    """One line of a trap-set file."""

    text_a: str
    text_b: str
    label: int
    category: str


@dataclass(frozen=True, slots=True)
class Question:
    source: str
    text: str
    intent: str = ""
    entity_type: str = ""
    entity_value: str = ""


def read_pairs(path: Path) -> list[TrapPair]:
    """Read a trap-set JSONL file (blank lines ignored)."""
    decoder = msgspec.json.Decoder(TrapPair)
    return [decoder.decode(line) for line in Path(path).read_bytes().splitlines() if line.strip()]


def intent_split(source: str, intent: str) -> SplitName:
    """The half an intent of a query log belongs to (``sha256("<source>:<intent>")`` even → dev)."""
    return "dev" if int(hashlib.sha256(f"{source}:{intent}".encode()).hexdigest(), 16) % 2 == 0 else "held_out"


def load_questions(data: Path, split: SplitName) -> dict[str, list[Question]]:
    """The split's questions per source (``banking77``, ``bitext``, ``qqp``), in file order."""
    from costwise.cache.verify import split_of  # the verifier's own split: its training questions are never used

    out: dict[str, list[Question]] = {"banking77": [], "bitext": [], "qqp": []}
    for name in ("train.csv", "test.csv"):
        with open(data / "query_logs" / "banking77" / name, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                if intent_split("banking77", row["category"]) == split:
                    out["banking77"].append(Question("banking77", row["text"].strip(), row["category"]))
    bitext = data / "query_logs" / "bitext_intent" / "Bitext_Sample_Customer_Service_Training_Dataset.csv"
    with open(bitext, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if intent_split("bitext", row["intent"]) == split:
                q = Question("bitext", row["utterance"].strip(), row["intent"], row["entity_type"], row["entity_value"])
                out["bitext"].append(q)
    wanted = "calibration" if split == "dev" else "held_out"
    seen: set[str] = set()
    for row in json.loads((data / "semantic_pairs" / "qqp_dev.json").read_text(encoding="utf-8")):
        if split_of(row["text_a"], row["text_b"]) == wanted and row["text_a"] not in seen:
            seen.add(row["text_a"])
            out["qqp"].append(Question("qqp", row["text_a"].strip()))
    return out


def _words(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"[a-z0-9']+", text.lower()))


def _paraphrases(questions: list[Question], rng: random.Random) -> Iterator[tuple[str, str]]:
    """Each question paired with its most word-sharing same-intent rewording (see the module rules)."""
    by_intent: dict[str, list[Question]] = defaultdict(list)
    for q in questions:
        by_intent[q.intent].append(q)
    order = questions[:]
    rng.shuffle(order)
    for q in order:
        mine = _words(q.text)
        best, best_score = None, 0.0
        for other in by_intent[q.intent]:
            theirs = _words(other.text)
            if theirs == mine or other.entity_value != q.entity_value:
                continue
            if set(re.findall(r"\d+", q.text)) != set(re.findall(r"\d+", other.text)):
                continue
            score = len(mine & theirs) / len(mine | theirs)
            if score > best_score:
                best, best_score = other, score
        if best is not None:
            yield best.text, q.text


def _bitext_values(questions: list[Question]) -> dict[str, list[str]]:
    values: dict[str, set[str]] = defaultdict(set)
    for q in questions:
        if q.entity_value:
            values[q.entity_type].add(q.entity_value)
    return {k: sorted(v) for k, v in values.items()}


def _candidates(source: str, questions: list[Question], rng: random.Random) -> Iterator[TrapPair]:
    """Every pair the rules make from ``source``'s questions, in a seeded random order of questions."""
    values = _bitext_values(questions)
    order = questions[:]
    rng.shuffle(order)
    for q in order:
        for category, rule in NEAR_REPEAT_RULES.items():
            out = rule(q.text, rng)
            if out is not None and out != q.text:
                yield TrapPair(q.text, out, 1, category)
        for category, rule in TRAP_RULES.items():
            out = rule(q.text, rng)
            if out is not None and out != q.text:
                yield TrapPair(q.text, out, 0, category)
        if q.entity_type in _ENTITY_KINDS | _NUMBER_KINDS:
            out = swap_entity_value(q.text, q.entity_value, values.get(q.entity_type, []), rng)
            if out is not None:
                yield TrapPair(q.text, out, 0, "entity_swap" if q.entity_type in _ENTITY_KINDS else "number")


def build(data: Path, split: SplitName, *, per_category: int = 150, seed: int = 16) -> list[TrapPair]:
    """The trap set of ``split``: up to ``per_category`` pairs per category, sources in equal shares."""
    rng = random.Random(f"{seed}:{split}")
    sources = load_questions(data, split)
    pools: dict[str, dict[str, list[TrapPair]]] = defaultdict(lambda: defaultdict(list))
    for source, questions in sources.items():
        for pair in _candidates(source, questions, rng):
            pools[pair.category][source].append(pair)
        if source != "qqp":  # QQP has no intents to find rewordings by
            for a, b in _paraphrases(questions, rng):
                pools["paraphrase"][source].append(TrapPair(a, b, 1, "paraphrase"))
                if len(pools["paraphrase"][source]) >= per_category:
                    break
    out: list[TrapPair] = []
    seen: set[tuple[str, str]] = set()
    for category in CATEGORIES:
        per_source = pools[category]
        share, taken = -(-per_category // max(1, len(per_source))), []
        for pool in per_source.values():
            taken += pool[:share]
        for pair in taken[:per_category]:
            if (pair.text_a, pair.text_b) not in seen:
                seen.add((pair.text_a, pair.text_b))
                out.append(pair)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m costwise.bench.trap_set", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--split", choices=["dev", "held_out"], required=True)
    parser.add_argument("--per-category", type=int, default=150)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    pairs = build(args.data, args.split, per_category=args.per_category, seed=args.seed)
    args.out.write_bytes(b"".join(msgspec.json.encode(p) + b"\n" for p in pairs))
    counts: dict[str, int] = defaultdict(int)
    for p in pairs:
        counts[p.category] += 1
    print(json.dumps({"out": str(args.out), "pairs": len(pairs), "per_category": counts}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
