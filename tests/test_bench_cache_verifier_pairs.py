"""The verifier's FAQ training pairs: dev-side intents of training files only, split by intent, labelled by answer
key, positives no veto refuses (real MiniLM for the neighbours)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from costwise.bench import verifier_pairs
from costwise.bench.trap_set import intent_split
from costwise.cache.verify import load_pairs, veto

TOPICS = ["card", "transfer", "refund", "account", "pin", "app", "fee", "top-up", "payment", "statement"]


def _data(root: Path) -> tuple[Path, dict[str, str]]:
    """banking77- and Bitext-shaped files; returns the data root and every training question's intent."""
    intent_of: dict[str, str] = {}
    bank = root / "query_logs" / "banking77"
    bank.mkdir(parents=True)
    train = []
    for i, topic in enumerate(TOPICS):
        for form in ("How do I get help with my {}?", "Who can help me with my {}?", "I need help with my {}"):
            train.append((form.format(topic), f"intent_{i}"))
    intent_of |= dict(train)
    test = [(f"Something about my {t}, can you help?", f"intent_{i}") for i, t in enumerate(TOPICS)]
    for name, rows in (("train.csv", train), ("test.csv", test)):
        with open(bank / name, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([("text", "category"), *rows])
    bitext = root / "query_logs" / "bitext_intent"
    bitext.mkdir(parents=True)
    with open(bitext / "Bitext_Sample_Customer_Service_Training_Dataset.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["utterance", "intent", "entity_type", "entity_value", "start_offset", "end_offset"])
        for i, topic in enumerate(TOPICS):
            for form in ("how to review my {}", "i want to review my {}", "review the {} for me"):
                writer.writerow([form.format(topic), f"review_{i}", "", "", 0, 0])
                intent_of[form.format(topic)] = f"review_{i}"
    return root, intent_of


def test_pairs_come_from_dev_intents_of_training_files_and_split_by_intent(tmp_path: Path) -> None:
    data, intent_of = _data(tmp_path)
    pairs = verifier_pairs.build(data, neighbours=1, seed=1)
    assert pairs == verifier_pairs.build(data, neighbours=1, seed=1), "seeded: the same pairs every time"
    source_of = {t: "bitext" if i.startswith("review") else "banking77" for t, i in intent_of.items()}
    for p in pairs:
        question = p.text_a if p.kind.startswith("trap:") else p.text_b  # a trap is asked about a question
        asked = intent_of[question]
        assert intent_split(source_of[question], asked) == "dev"
        assert (p.split == "calibration") is verifier_pairs.calibration_intent(source_of[question], asked)
        if p.kind.startswith("trap:"):
            assert p.label == 0
        else:
            assert p.text_a in intent_of and p.label == int(intent_of[p.text_a] == asked)
            assert intent_split(source_of[p.text_a], intent_of[p.text_a]) == "dev"
        if p.label == 1:
            assert veto(p.text_b, p.text_a) is None
    assert {p.label for p in pairs} == {0, 1} and {p.split for p in pairs} == {"train", "calibration"}
    assert len({frozenset((p.text_a, p.text_b)) for p in pairs}) == len(pairs)


def test_the_written_file_is_read_by_the_verifiers_own_loader_with_its_splits(tmp_path: Path) -> None:
    data, _ = _data(tmp_path)
    out = tmp_path / "pairs.json"
    assert verifier_pairs.main(["--data", str(data), "--neighbours", "1", "--out", str(out)]) == 0
    rows = json.loads(out.read_text(encoding="utf-8"))
    for split in ("train", "calibration"):
        loaded = load_pairs(out, split)  # the row's own split, not the pair-hash rule
        assert len(loaded) == sum(r["split"] == split for r in rows) > 0
    assert load_pairs(out, "held_out") == []
