"""``cache-replay``'s labels (Bitext's fine intent, answer keys, the intent split) and one replay end to end
(real MiniLM, real Qdrant Edge, the shipped verifier)."""

from __future__ import annotations

import csv
from pathlib import Path

from costwise.bench import cache_replay
from costwise.bench.trap_set import intent_split

BITEXT_HEADER = ["utterance", "intent", "entity_type", "entity_value", "start_offset", "end_offset", "category", "tags"]


def _bitext(path: Path, rows: list[tuple[str, str, str, str, str]]) -> Path:
    """A file shaped like Bitext's: (utterance, intent, entity type, entity value, coarse category)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(BITEXT_HEADER)
        writer.writerows([u, i, t, v, 0, 0, c, "B"] for u, i, t, v, c in rows)
    return path


def test_bitext_is_labelled_by_its_fine_intent_and_values_not_its_coarse_category(tmp_path: Path) -> None:
    path = _bitext(
        tmp_path / "bitext.csv",
        [
            ("how do I cancel order 123?", "cancel_order", "order_id", "123", "ORDER"),
            ("where is order 123?", "track_order", "order_id", "123", "ORDER"),
            ("where is order 456?", "track_order", "order_id", "456", "ORDER"),
            ("which payment methods do you accept?", "check_payment_methods", "", "", "PAYMENT"),
        ],
    )
    queries, info = cache_replay.read_log(path)
    labels = dict(queries)
    assert info["source"] == "bitext" and info["label"] == "answer_key"
    # Two intents of one category are two answers; one intent about two orders is two answers as well.
    assert labels["how do I cancel order 123?"] != labels["where is order 123?"] != labels["where is order 456?"]
    assert labels["which payment methods do you accept?"] == "check_payment_methods"


def test_banking77_keys_value_lookups_and_a_named_column_is_taken_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "banking.csv"
    rows = [("What is the rate for EUR?", "exchange_rate"), ("What is the rate for GBP?", "exchange_rate")]
    rows += [("Where is my card?", "card_arrival")]
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("text", "category"), *rows])
    labels = dict(cache_replay.read_log(path)[0])
    assert labels["What is the rate for EUR?"] != labels["What is the rate for GBP?"]
    assert labels["Where is my card?"] == "card_arrival"
    raw, info = cache_replay.read_log(path, label_col="category")
    assert {label for _, label in raw} == {"exchange_rate", "card_arrival"} and info["source"] is None


def test_the_intent_split_keeps_one_side(tmp_path: Path) -> None:
    intents = [f"intent_{i}" for i in range(12)]
    path = _bitext(tmp_path / "b.csv", [(f"question {i}?", intent, "", "", "X") for i, intent in enumerate(intents)])
    for side in ("dev", "held_out"):
        kept = {label for _, label in cache_replay.read_log(path, intents=side)[0]}  # type: ignore[arg-type]
        assert kept and kept == {i for i in intents if intent_split("bitext", i) == side}


async def test_a_replay_serves_a_misspelled_repeat_and_counts_it_right(tmp_path: Path) -> None:
    path = _bitext(
        tmp_path / "bitext.csv",
        [
            ("How do I change my delivery address?", "change_shipping_address", "", "", "SHIPPING"),
            ("How do I change my delivery adress?", "change_shipping_address", "", "", "SHIPPING"),
            ("How do I cancel order 123?", "cancel_order", "order_id", "123", "ORDER"),
        ],
    )
    report = await cache_replay.run(path, 60, 0.5, 7, None, None)
    assert report["distinct_queries"] == 3 and report["label"] == "answer_key"
    # Whichever wording comes first is stored; the other is a near-repeat of it, the same answer.
    assert report["semantic_right"] >= 1 and report["semantic_wrong"] == 0
    assert report["semantic_opportunity"] >= report["semantic_right"]
    assert report["exact"] + report["semantic_right"] + report["misses"] == 60
