"""``costwise-bench workload`` on the committed excerpt of ../shared/data (tests/fixtures/workload, sources in its
README), and ``load_workload``, the replay's reader."""

from __future__ import annotations

import csv
import itertools
import json
from collections import Counter
from pathlib import Path
from statistics import median

import msgspec
import pytest

from costwise.bench.__main__ import main
from costwise.bench.data_sources import Utterance
from costwise.bench.workload import (
    NOT_ANSWER_DETERMINING,
    Spec,
    WorkloadError,
    WorkloadLine,
    answer_key,
    build,
    entity_values,
    load_workload,
)
from costwise.router.learned import train_mask

DATA = Path(__file__).parent / "fixtures" / "workload"
GSM8K = DATA / "router" / "routellm" / "gsm8k_dev_responses.csv"
CONTAMINATED = DATA / "router" / "routellm" / "mmlu_contaminated_prompts.jsonl"


def _build(**changes: object) -> list[WorkloadLine]:
    spec = Spec(**{"data": DATA, "requests": 600, **changes})  # type: ignore[arg-type]
    return build(spec)[0]


def _cli(out: Path, *extra: str) -> None:
    assert main(["workload", "--data", str(DATA), "--requests", "300", "--out", str(out), *extra]) == 0


def test_the_requested_count_mix_and_tenant_shares_are_exact() -> None:
    lines, excluded = build(Spec(data=DATA, requests=600, tenants=3, mix=(("faq", 0.6), ("routing", 0.4))))

    assert len(lines) == 600
    assert Counter(line.category for line in lines) == {"faq": 360, "routing": 240}
    # A category's share is split evenly among its sources.
    assert Counter(line.source for line in lines) == {"banking77": 180, "bitext": 180, "gsm8k": 120, "mmlu": 120}
    assert Counter(line.tenant for line in lines) == {"tenant-1": 200, "tenant-2": 200, "tenant-3": 200}
    assert excluded == {"gsm8k": 0, "mmlu": 1}


def test_a_mix_may_name_sources_and_must_name_selected_ones() -> None:
    lines = _build(requests=400, mix=(("banking77", 3.0), ("gsm8k", 1.0)))
    assert Counter(line.source for line in lines) == {"banking77": 300, "gsm8k": 100}

    with pytest.raises(ValueError, match="names no selected source"):
        _build(routing=("gsm8k",), mix=(("faq", 1.0), ("mmlu", 1.0)))


def test_the_cli_writes_the_same_file_for_a_seed_and_another_for_another_seed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, again, other = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    _cli(first, "--seed", "7")
    summary = json.loads(capsys.readouterr().out)
    _cli(again, "--seed", "7")
    _cli(other, "--seed", "8")

    assert first.read_bytes() == again.read_bytes()
    assert first.read_bytes() != other.read_bytes()
    assert summary["requests"] == 300 and summary["by_category"] == {"faq": 180, "routing": 120}
    assert summary["contaminated_excluded"] == {"gsm8k": 0, "mmlu": 1}
    assert 0 < summary["faq_answer_determining_share"] < 1
    assert len(load_workload(first)) == 300


def test_arrivals_increase_as_a_poisson_process_at_the_rate() -> None:
    arrivals = [line.arrival or 0.0 for line in _build(requests=2000, rate=20.0)]

    assert all(b > a for a, b in itertools.pairwise(arrivals)) and arrivals[0] > 0
    # 2,000 exponential gaps of mean 1/20 s: the total is 100 s ± 2.2 % (one standard deviation).
    assert 90 < arrivals[-1] < 110


def _intent_counts(lines: list[WorkloadLine], tenant: str, source: str) -> Counter[str | None]:
    return Counter(line.label for line in lines if line.tenant == tenant and line.source == source)


def test_intent_popularity_is_zipf_skewed_per_tenant_and_each_tenant_ranks_its_own() -> None:
    lines, flat = _build(requests=3000), _build(requests=3000, zipf_s=0.0)
    tops = []
    for tenant in ("tenant-1", "tenant-2", "tenant-3"):
        for source in ("banking77", "bitext"):
            counts = _intent_counts(lines, tenant, source)
            assert max(counts.values()) >= 3 * median(counts.values()), (tenant, source, counts)
            uniform = _intent_counts(flat, tenant, source)
            assert max(uniform.values()) < 1.5 * median(uniform.values())
            tops.append(counts.most_common(1)[0][0])
    assert len(set(tops)) > 2  # not one global ranking


def test_a_popular_intent_arrives_in_many_phrasings() -> None:
    lines = [line for line in _build(requests=1000) if line.source == "banking77"]
    top, _ = Counter(line.label for line in lines).most_common(1)[0]
    assert len({line.prompt for line in lines if line.label == top}) >= 4


def test_answer_keys_separate_entities_only_where_they_change_the_answer() -> None:
    same_order = [Utterance(t, "track_order", ("732201349959",)) for t in ("track 732201349959", "status of it")]
    other_order = Utterance("track 370795561790", "track_order", ("370795561790",))
    assert answer_key("bitext", same_order[0]) == answer_key("bitext", same_order[1]) == "track_order[732201349959]"
    assert answer_key("bitext", other_order) != answer_key("bitext", same_order[0])
    usd = answer_key("banking77", Utterance("How do I exchange USD to GBP?", "exchange_via_app"))
    aud = answer_key("banking77", Utterance("How do I exchange AUD to GBP?", "exchange_via_app"))
    assert usd == "exchange_via_app[gbp,usd]" and aud == "exchange_via_app[aud,gbp]"
    # An FAQ intent is the answer, whatever numbers the question carries.
    weeks = [Utterance(f"My card hasn't come after {n} weeks", "card_arrival") for n in (2, 3)]
    assert {answer_key("banking77", u) for u in weeks} == {"card_arrival"}
    values = entity_values("I paid 20 euros, not €25, in the United States")
    assert values == ("20", "25", "euro", "states", "united", "€")


def test_built_lines_of_entity_intents_key_by_their_entities() -> None:
    faq = [line for line in _build(requests=2000) if line.category == "faq"]
    keys_by_label: dict[str | None, set[str | None]] = {}
    for line in faq:
        keys_by_label.setdefault(line.label, set()).add(line.answer_key)
        determining = line.label not in NOT_ANSWER_DETERMINING[line.source or ""]
        assert (line.answer_key == line.label) == determining, line
    # The fixture's track_order rows name four order ids, delete_account rows four account types.
    assert len(keys_by_label["track_order"]) == 4 and len(keys_by_label["delete_account"]) == 4
    assert keys_by_label["card_arrival"] == {"card_arrival"}


def test_gsm8k_lines_carry_both_tiers_answers_and_mmlu_lines_correctness_only() -> None:
    with GSM8K.open(newline="", encoding="utf-8") as fh:
        recorded = {row["prompt"]: row for row in csv.DictReader(fh)}
    excluded = json.loads(CONTAMINATED.read_text())["eval_prompt"].strip()
    lines = _build(requests=400)

    gsm8k = [line for line in lines if line.source == "gsm8k"]
    assert len({line.prompt for line in gsm8k}) == len(recorded)  # every prompt used before any repeats
    for line in gsm8k:
        row = recorded[line.prompt or ""]
        weak, strong = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"  # the less / more accurate
        assert line.responses == {"small": row[f"{weak}_response"], "large": row[f"{strong}_response"]}
        assert line.correct == {"small": row[weak] == "True", "large": row[strong] == "True"}
    mmlu = [line for line in lines if line.source == "mmlu"]
    assert mmlu and all(line.responses is None and line.correct is not None for line in mmlu)
    assert all((line.prompt or "").strip() != excluded for line in lines)


def test_a_routing_split_draws_only_that_side_of_the_routers_own_split() -> None:
    whole = {line.prompt for line in _build() if line.category == "routing"}
    held_out = {line.prompt for line in _build(routing_split="held_out") if line.category == "routing"}
    fit_on = {line.prompt for line in _build(routing_split="train") if line.category == "routing"}
    in_train = dict(zip(sorted(whole), train_mask(sorted(whole)), strict=True))

    assert held_out and fit_on and held_out | fit_on == whole and not held_out & fit_on
    assert not any(in_train[p] for p in held_out) and all(in_train[p] for p in fit_on)
    with pytest.raises(ValueError, match="routing-split"):
        _build(routing_split="test")


def test_fields_that_do_not_apply_are_left_out_of_the_file(tmp_path: Path) -> None:
    out = tmp_path / "w.jsonl"
    _cli(out)
    rows = [json.loads(raw) for raw in out.read_text().splitlines()]
    faq = next(r for r in rows if r["category"] == "faq")
    routing = next(r for r in rows if r["category"] == "routing")
    assert {"correct", "responses", "messages"}.isdisjoint(faq) and {"label", "answer_key"}.isdisjoint(routing)
    assert faq["temperature"] == 0.0 and {"prompt", "tenant", "arrival", "max_tokens"} <= faq.keys()


def test_a_malformed_line_is_refused_with_its_line_number(tmp_path: Path) -> None:
    good = msgspec.json.encode(WorkloadLine(prompt="hi", tenant="t1", arrival=0.5)).decode()
    path = tmp_path / "w.jsonl"
    cases = {
        "{not json": "malformed",
        '{"tenant": "t1"}': "exactly one of `prompt` or `messages`",
        '{"prompt": "hi", "arrival": "soon"}': "arrival",
        '{"prompt": "hi", "correct": {"small": "yes"}}': "correct",
    }
    for bad, reason in cases.items():
        path.write_text(f"{good}\n\n{bad}\n{good}\n")
        with pytest.raises(WorkloadError, match=f":3: .*{reason}") as caught:
            load_workload(path)
        assert caught.value.line == 3

    errors: list[WorkloadError] = []
    path.write_text(f'{good}\n{{"prompt": 1}}\n{{"messages": [{{"role": "user", "content": "hi"}}], "new": 1}}\n')
    lines = load_workload(path, on_error=errors.append)
    assert [e.line for e in errors] == [2]  # reported, skipped; unknown fields are ignored
    assert lines[0].prompt == "hi" and lines[1].messages is not None and lines[1].messages[0].content == "hi"


def test_missing_data_fails_loudly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="banking77"):
        build(Spec(data=tmp_path))
    with pytest.raises(SystemExit, match=r"costwise-bench workload: .*not found"):
        main(["workload", "--data", str(tmp_path), "--faq", "", "--mix", "routing=1", "--out", str(tmp_path / "o")])
