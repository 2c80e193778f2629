"""The trap set's rules and split, and ``costwise-bench cache-traps`` end to end on the hand-checked sample
(real MiniLM, real Qdrant Edge, the shipped verifier and the one before issue 16)."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

from costwise.bench import trap_rules, trap_set
from costwise.bench.__main__ import main

SAMPLE = Path(__file__).parent / "fixtures" / "cache_traps_sample.jsonl"


@pytest.mark.parametrize(
    ("rule", "text", "changed"),
    [
        ("negation", "Why hasn't my card arrived?", "has"),
        ("negation", "How do I activate my card?", "deactivate"),
        ("number", "Can I transfer 50 euros?", None),
        ("number", "I paid on Monday", None),
        ("scope", "Why was my card declined?", None),
        ("entity_swap", "Can I pay in euros?", None),
    ],
)
def test_each_trap_rule_changes_the_question(rule: str, text: str, changed: str | None) -> None:
    out = trap_rules.TRAP_RULES[rule](text, random.Random(0))
    assert out is not None and out != text
    if changed is not None:
        assert changed in out


@pytest.mark.parametrize("rule", list(trap_rules.NEAR_REPEAT_RULES))
def test_each_near_repeat_rule_keeps_the_words(rule: str) -> None:
    text = "I can't find my new card, what should I do now?"
    for seed in range(5):
        out = trap_rules.NEAR_REPEAT_RULES[rule](text, random.Random(seed))
        assert out is not None and out != text
        # Whatever changed, every number and the words "card" and "find" survive.
        assert "card" in out.lower() and ("find" in out.lower() or rule == "typo")


def test_a_rule_that_does_not_apply_says_so() -> None:
    rng = random.Random(0)
    assert trap_rules.number("How do I reset my PIN?", rng) is None
    assert trap_rules.entity_swap("How do I reset my PIN?", rng) is None
    assert trap_rules.word_order("Where is my card?", rng) is None


def _tiny_data(root: Path) -> Path:
    """A data directory shaped like ../shared/data with a few questions per intent."""
    bank = root / "query_logs" / "banking77"
    bank.mkdir(parents=True)
    rows = [(f"Why hasn't my card number {i} arrived after {i} days?", f"intent_{i % 6}") for i in range(60)]
    rows += [(f"How do I activate my card in euros, case {i}?", f"intent_{i % 6}") for i in range(60)]
    for name, part in (("train.csv", rows[::2]), ("test.csv", rows[1::2])):
        with open(bank / name, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([("text", "category"), *part])
    bitext = root / "query_logs" / "bitext_intent"
    bitext.mkdir(parents=True)
    header = ["utterance", "intent", "entity_type", "entity_value", "start_offset", "end_offset", "category", "tags"]
    with open(bitext / "Bitext_Sample_Customer_Service_Training_Dataset.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for i in range(40):
            city = ["Toronto", "Seattle", "Munich"][i % 3]
            writer.writerow(
                [f"ship my order {i} to {city}, please", f"ship_{i % 4}", "delivery_city", city, 0, 0, "X", "B"]
            )
    pairs = root / "semantic_pairs"
    pairs.mkdir()
    qqp = [
        {"text_a": f"What is the best way to learn French in {i} weeks?", "text_b": "x", "label": 0} for i in range(80)
    ]
    (pairs / "qqp_dev.json").write_text(json.dumps(qqp), encoding="utf-8")
    return root


def test_the_two_halves_share_no_intent_and_no_question(tmp_path: Path) -> None:
    data = _tiny_data(tmp_path)
    dev, held = (trap_set.load_questions(data, s) for s in ("dev", "held_out"))
    for source in ("banking77", "bitext"):
        assert dev[source] and held[source], "a handful of intents lands on both sides of the hash"
        assert not {q.intent for q in dev[source]} & {q.intent for q in held[source]}
    assert not {q.text for qs in dev.values() for q in qs} & {q.text for qs in held.values() for q in qs}


def test_the_builder_writes_labelled_lines_of_every_category(tmp_path: Path) -> None:
    data = _tiny_data(tmp_path)
    pairs = trap_set.build(data, "dev", per_category=10, seed=1)
    assert pairs == trap_set.build(data, "dev", per_category=10, seed=1), "seeded: the same file every time"
    assert {p.category for p in pairs} <= set(trap_set.CATEGORIES)
    assert {p.category for p in pairs if p.label == 0} == set(trap_rules.TRAP_RULES)
    assert all(p.text_a != p.text_b for p in pairs) and len({(p.text_a, p.text_b) for p in pairs}) == len(pairs)
    out = tmp_path / "dev.jsonl"
    assert (
        trap_set.main(["--data", str(data), "--split", "dev", "--per-category", "10", "--seed", "1", "--out", str(out)])
        == 0
    )
    assert trap_set.read_pairs(out) == pairs


def test_the_bench_reports_every_category_of_the_sample_for_both_verifiers(capsys: pytest.CaptureFixture[str]) -> None:
    sample = trap_set.read_pairs(SAMPLE)
    assert main(["cache-traps", "--pairs", str(SAMPLE), "--compare", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["command"].startswith("costwise-bench cache-traps") and report["machine"]
    for name in ("old", "new"):
        categories = report[name]["categories"]
        assert set(categories) == {p.category for p in sample}
        for category, row in categories.items():
            assert row["pairs"] == sum(p.category == category for p in sample)
            assert 0 <= row["hits"] <= row["pairs"]
            assert sum(row["refused_by"].values()) == row["pairs"] - row["hits"]
            if row["label"] == 0:
                assert row["served_traps"] == row["hits"] and row["recall"] is None
        assert 0 < report[name]["lookup_ms_p50"] <= report[name]["lookup_ms_p99"]
        totals = report[name]["totals"]
        assert totals["traps"]["pairs"] + totals["should_hit"]["pairs"] == len(sample)
    # The issue-16 checks make the shipped verifier serve no trap of the hand-checked sample ...
    assert report["new"]["totals"]["traps"]["served"] == 0
    # ... and the refusals name the checks that made them.
    named = {r for row in report["new"]["categories"].values() if row["label"] == 0 for r in row["refused_by"]}
    assert named & {"negation", "antonym", "kinds", "numbers", "dates", "scope", "entities"}
