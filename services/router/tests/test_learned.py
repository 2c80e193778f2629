"""The learned router, its calibration and the cascade's response check, on real RouteLLM rows the shipped
artifacts never trained on (tests/data/routellm) and the session's real MiniLM embedder."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from costwise.contracts import LogprobSummary
from costwise.router import RouterSettings
from costwise.router.learned import (
    OnlineRouter,
    ResponseVerifier,
    RoutePredictor,
    check_response,
    load_routellm,
    router_threshold,
    train_mask,
)
from costwise.settings import SettingsError, load

DATA = Path(__file__).parent / "data" / "routellm"
MMLU, GSM8K = DATA / "mmlu_sample.csv", DATA / "gsm8k_sample.csv"
SEED = 1


@pytest.fixture(scope="module")
def predictor() -> RoutePredictor:
    return RoutePredictor.load()


@pytest.fixture(scope="module")
def mmlu(semantic_models: Any) -> tuple[Any, np.ndarray]:
    outcomes = load_routellm(MMLU)
    return outcomes, semantic_models[0].embed_many(outcomes.prompts)


def _auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """P(a random positive scores above a random negative)."""
    pos, neg = scores[positive], scores[~positive]
    return float(
        ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (len(pos) * len(neg))
    )


def test_fixture_rows_are_held_out_of_training() -> None:
    for file in (MMLU, GSM8K):
        assert not train_mask(load_routellm(file).prompts).any()


def test_shipped_router_separates_easy_from_hard_held_out_prompts(predictor: RoutePredictor, mmlu: Any) -> None:
    outcomes, vectors = mmlu
    p = predictor.p_small_ok(vectors, outcomes.prompts)
    assert p.shape == (40,) and ((p > 0) & (p < 1)).all()
    easy = outcomes.weak_ok  # the fixture: 20 rows both models got right, 20 only the strong one did
    assert _auc(p, easy) > 0.6  # 0.68 on all 5,000 such held-out MMLU rows; 0.5 is chance


def test_thresholds_grow_with_the_quality_target(predictor: RoutePredictor) -> None:
    low, mid, high = predictor.threshold(0.85), predictor.threshold(0.95), predictor.threshold(0.99)
    assert 0.0 <= low <= mid <= high <= 1.0
    assert low < high
    assert predictor.threshold(1.5) == float("inf")


def test_router_threshold_keeps_the_target_on_its_rows() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(2000)
    weak_ok = rng.random(2000) < p  # the score is informative
    strong_ok = weak_ok | (rng.random(2000) < 0.6)
    t = router_threshold(p, weak_ok, strong_ok, 0.95)
    achieved = np.where(p < t, strong_ok, weak_ok).mean()
    assert achieved >= 0.95 * strong_ok.mean()
    assert (p < t).mean() < 0.9  # and does not just send everything to strong


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embeddings")  # the fixture's prompts are embedded once for the module


def _run_eval(data: Path, semantic_models: Any, cache_dir: Path, **models: str) -> dict[str, Any]:
    from costwise.bench.router_eval import evaluate_data

    # the fixture rows are all held out of the shipped artifacts' split (seed 0): split them anew
    out = evaluate_data(data, seed=SEED, **models, embedder=semantic_models[0], cache_dir=cache_dir)
    return json.loads(json.dumps(out))  # what the CLI prints


def test_router_eval_reports_held_out_numbers(semantic_models: Any, cache_dir: Path) -> None:
    out = _run_eval(GSM8K, semantic_models, cache_dir)
    for key in ("n", "weak_accuracy", "strong_accuracy", "achieved_accuracy", "strong_call_share", "cost_reduction"):
        assert key in out
    assert 0 < out["n"] < 40 and out["n"] + out["train_n"] == 40
    for policy in ("router", "cascade"):
        assert 0.0 <= out[policy]["strong_call_share"] <= 1.0
        assert out[policy]["cost_reduction"] <= 1.0
    assert out["cost_reduction"] == max(out["router"]["cost_reduction"], out["cascade"]["cost_reduction"])


def test_operating_points_ignore_the_held_out_labels(semantic_models: Any, cache_dir: Path, tmp_path: Path) -> None:
    """Flipping every label of the held-back rows changes the reported accuracy, never the chosen thresholds."""
    rows = list(csv.DictReader(GSM8K.open(newline="")))
    models = [c for c in rows[0] if c != "prompt" and not c.endswith("_response")]
    held = ~train_mask([r["prompt"] for r in rows], seed=SEED)
    for row, flip in zip(rows, held, strict=True):
        for m in models:
            row[m] = str((row[m] == "True") != flip)
    flipped = tmp_path / "flipped.csv"
    with flipped.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    named = {"weak": models[0], "strong": models[1]}  # flipped labels must not swap which model is which
    original = _run_eval(GSM8K, semantic_models, cache_dir, **named)
    changed = _run_eval(flipped, semantic_models, cache_dir, **named)
    for policy in ("router", "cascade"):
        assert original[policy]["operating_point"] == changed[policy]["operating_point"]
    assert original["weak_accuracy"] != changed["weak_accuracy"]


CONFIDENT = LogprobSummary(mean=-0.05, min=-2.0, count=30)


@pytest.mark.parametrize(
    ("text", "finish", "logprobs", "reason"),
    [
        ("", "stop", CONFIDENT, "empty"),
        ("   \n", "stop", None, "empty"),
        ("I'm sorry, but I can't help with that.", "stop", CONFIDENT, "refusal"),
        ("The answer is 4", "length", CONFIDENT, "truncated"),
        ("The answer is 4", "abort", CONFIDENT, "finish_reason:abort"),
        ("The answer is 4.", "stop", LogprobSummary(mean=-2.5, min=-6.0, count=12), "low_mean_logprob"),
        ("The answer is 4.", "stop", LogprobSummary(mean=-0.3, min=-15.0, count=12), "low_min_logprob"),
    ],
)
def test_check_response_rejects(text: str, finish: str, logprobs: LogprobSummary | None, reason: str) -> None:
    verdict = check_response(text, finish, logprobs)
    assert (verdict.accept, verdict.reason) == (False, reason)


def test_check_response_accepts_a_confident_answer() -> None:
    verdict = check_response("2 + 2 = 4, so the answer is 4.", "stop", CONFIDENT)
    assert verdict.accept and verdict.reason == "ok"
    assert verdict.score == pytest.approx(np.exp(-0.05))


def test_shipped_verifier_reads_the_answer() -> None:
    verifier = ResponseVerifier.load()
    prompt = "Tom has 3 boxes with 12 apples each. He eats 5 apples. How many apples are left?"
    good = "Tom has 3 * 12 = <<3*12=36>>36 apples.\nAfter eating 5 he has 36 - 5 = <<36-5=31>>31 apples.\n#### 31"
    wrong_sum = (
        "Tom has 3 * 12 = <<3*12=38>>38 apples.\nAfter eating 5 he has 38 - 5 = <<38-5=30>>30 apples.\n#### 30.5"
    )
    cut_off = "Tom has 3 * 12 = <<3*12=36>>36 apples.\nAfter eating 5 he has 36 - 5 = <<36-5=31>>3"
    accepted = check_response(good, "stop", CONFIDENT, prompt=prompt, verifier=verifier)
    assert accepted.accept, accepted
    for bad in (wrong_sum, cut_off):
        verdict = check_response(bad, "stop", CONFIDENT, prompt=prompt, verifier=verifier)
        assert (verdict.accept, verdict.reason) == (False, "verifier")
        assert verdict.score < accepted.score


def test_the_verifier_moves_to_another_operating_point_and_the_router_settings_name_it() -> None:
    shipped = ResponseVerifier.load()
    assert shipped.direct_below is not None and 0 < shipped.threshold < 1
    prompt = "Tom has 3 boxes with 12 apples each. He eats 5 apples. How many apples are left?"
    good = "Tom has 3 * 12 = <<3*12=36>>36 apples.\nAfter eating 5 he has 36 - 5 = <<36-5=31>>31 apples.\n#### 31"
    strict = shipped.at(escalate_below=0.999)  # nothing passes a bar this high
    verdict = check_response(good, "stop", CONFIDENT, prompt=prompt, verifier=strict)
    assert (verdict.accept, verdict.reason) == (False, "verifier")
    assert shipped.at(direct_below=0.2).direct_below == 0.2 and shipped.at().threshold == shipped.threshold
    settings = load(RouterSettings, "COSTWISE_ROUTER_", {"COSTWISE_ROUTER_VERIFIER_ESCALATE_BELOW": "0.8"})
    assert settings.verifier_escalate_below == 0.8 and settings.verifier_direct_below is None
    with pytest.raises(SettingsError, match="VERIFIER_DIRECT_BELOW"):
        load(RouterSettings, "COSTWISE_ROUTER_", {"COSTWISE_ROUTER_VERIFIER_DIRECT_BELOW": "1.5"})


def test_shipped_verifier_ranks_held_out_answers_better_than_chance() -> None:
    outcomes = load_routellm(GSM8K)
    assert outcomes.weak_responses is not None
    p = ResponseVerifier.load().p_ok(outcomes.prompts, outcomes.weak_responses)
    assert _auc(p, outcomes.weak_ok) > 0.6


def test_online_updates_move_one_tenant_only(predictor: RoutePredictor, mmlu: Any) -> None:
    outcomes, vectors = mmlu
    router = OnlineRouter(predictor, max_tenants=2)
    prompt, vector = outcomes.prompts[0], vectors[0]
    before = {t: router.p_small_ok(t, vectors[:1], [prompt])[0] for t in ("a", "b")}
    for _ in range(20):
        router.observe("a", vector, prompt, small_ok=False)
    assert router.p_small_ok("a", vectors[:1], [prompt])[0] < before["a"] - 0.1
    assert router.p_small_ok("b", vectors[:1], [prompt])[0] == before["b"]
    router.observe("b", vector, prompt, small_ok=True)
    assert router.p_small_ok("b", vectors[:1], [prompt])[0] > before["b"]
    router.observe("c", vector, prompt, small_ok=True)  # over max_tenants: "a" was updated longest ago
    assert router.tenants() == ["b", "c"]
    assert router.p_small_ok("a", vectors[:1], [prompt])[0] == before["a"]


def test_bad_outcome_files_are_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt,m1,m2\nhello,True,maybe\n")
    with pytest.raises(ValueError, match="not a boolean"):
        load_routellm(bad)
    bad.write_text("question,m1,m2\nhello,True,False\n")
    with pytest.raises(ValueError, match="no 'prompt' column"):
        load_routellm(bad)
    with pytest.raises(ValueError, match="no model column"):
        load_routellm(MMLU, weak="nobody")


def test_huge_or_hostile_text_is_read_in_bounded_time(predictor: RoutePredictor) -> None:
    """Long digit runs and operator chains (the shapes that make regexes backtrack) stay fast at 1 MB."""
    verifier = ResponseVerifier.load()
    hostile = ["1+" * 500_000, "1" * 1_000_000, "1." * 500_000, "<<1+" * 250_000, "#### " + "9" * 400]
    started = time.perf_counter()
    for text in hostile:
        check_response(text, "stop", CONFIDENT, prompt=text, verifier=verifier)
    predictor.p_small_ok(np.zeros((len(hostile), 384), dtype=np.float32), hostile)
    assert time.perf_counter() - started < 10
