"""Where the learned router and the response verifier abstain: prompts unlike their training prompts, measured with
the session's real MiniLM embedder on held-out RouteLLM rows (tests/data/routellm) and FAQ questions from the
committed trap-set sample (banking77 / Bitext)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from costwise.contracts import ChatMessage, InferenceRequest
from costwise.router import Router, RouterSettings, build
from costwise.router.learned.domain import ROUTER_DOMAIN, VERIFIER_DOMAIN, Domain

from .test_heads import _catalog

DATA = Path(__file__).parent / "data" / "routellm"
FAQ = Path(__file__).parents[3] / "tests" / "fixtures" / "cache_traps_sample.jsonl"


def _prompts(path: Path) -> list[str]:
    with path.open(newline="") as fh:
        return [row["prompt"] for row in csv.DictReader(fh)]


def _faq() -> list[str]:
    return sorted({json.loads(line)["text_a"] for line in FAQ.read_text().splitlines() if line.strip()})


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_a_domain_knows_new_points_of_its_own_kind_and_not_others() -> None:
    rng = np.random.default_rng(0)
    here, there = rng.normal(size=384), rng.normal(size=384)
    own = _unit(here + 0.08 * rng.normal(size=(600, 384)) * np.sqrt(384) / 4)
    other = _unit(there + 0.08 * rng.normal(size=(200, 384)) * np.sqrt(384) / 4)
    domain = Domain.fit(own[:400], k=8, coverage=0.97)
    assert domain.knows(own[400:]).mean() >= 0.9
    assert domain.knows(other).mean() == 0.0


@pytest.fixture(scope="module")
def vectors(semantic_models: Any) -> dict[str, np.ndarray]:
    embed = semantic_models[0].embed_many
    return {
        "gsm8k": embed(_prompts(DATA / "gsm8k_sample.csv")),
        "mmlu": embed(_prompts(DATA / "mmlu_sample.csv")),
        "faq": embed(_faq()),
    }


def test_the_shipped_domains_know_held_out_prompts_of_their_kind(vectors: dict[str, np.ndarray]) -> None:
    router, verifier = Domain.load(ROUTER_DOMAIN), Domain.load(VERIFIER_DOMAIN)
    assert router.knows(vectors["mmlu"]).mean() >= 0.9 and router.knows(vectors["gsm8k"]).mean() >= 0.9
    assert verifier.knows(vectors["gsm8k"]).mean() >= 0.9
    assert verifier.knows(vectors["mmlu"]).mean() <= 0.2  # trained on math word problems only
    assert verifier.knows(vectors["faq"]).mean() <= 0.05
    assert router.knows(vectors["faq"]).mean() <= 0.4


async def test_the_router_never_skips_the_small_tier_for_a_prompt_it_does_not_know(
    nats_url: str, unique: str, semantic_models: Any, vectors: dict[str, np.ndarray]
) -> None:
    router = await build(RouterSettings(nats_url=nats_url), catalog=_catalog(unique), embedder=semantic_models[0])
    odds = router.odds
    assert odds is not None
    unknown = [
        p for p, known in zip(_faq(), Domain.load(ROUTER_DOMAIN).knows(vectors["faq"]), strict=True) if not known
    ]
    requests = [
        InferenceRequest(request_id=f"r{i}", tenant=unique, messages=[ChatMessage(role="user", content=p)])
        for i, p in enumerate(unknown)
    ]
    try:
        doubted = [req for req in requests if await odds.p_small_ok(req) < odds.threshold]
        assert doubted, "no FAQ question the shipped router doubts: this test would prove nothing"
        assert [await odds.skip_small(req) for req in doubted] == [False] * len(doubted)
    finally:
        await router.stop()


async def test_where_the_verifier_judges_the_answer_the_cascades_own_skip_threshold_applies(
    nats_url: str, unique: str, semantic_models: Any
) -> None:
    """The verifier was calibrated together with a lower skip threshold (a doubtful answer is caught after it is
    written): a math word problem the router alone would send up a tier starts small when the verifier is on."""
    routers = {
        on: await build(
            RouterSettings(nats_url=nats_url, response_verifier=on),
            catalog=_catalog(unique),
            embedder=semantic_models[0],
        )
        for on in (True, False)
    }
    try:
        await _compare(routers, unique)
    finally:
        for router in routers.values():
            await router.stop()


async def _compare(routers: dict[bool, Router], unique: str) -> None:
    odds = routers[True].odds
    assert odds is not None and routers[True].verifier is not None
    verifier = await routers[True].verifier.for_prompt(_prompts(DATA / "gsm8k_sample.csv")[0])
    assert verifier is not None and verifier.direct_below is not None and verifier.direct_below < odds.threshold
    between = []
    for i, prompt in enumerate(_prompts(DATA / "gsm8k_sample.csv")):
        req = InferenceRequest(request_id=f"g{i}", tenant=unique, messages=[ChatMessage(role="user", content=prompt)])
        judged = await routers[True].verifier.for_prompt(prompt) is not None  # inside the verifier's domain
        if judged and verifier.direct_below <= await odds.p_small_ok(req) < odds.threshold:
            between.append(req)
    assert between, "no sample prompt between the two thresholds: this test would prove nothing"
    for req in between:
        assert not await routers[True]._skips_small(req)
        assert await routers[False]._skips_small(req)
