"""``costwise-bench router-domain``: fit where the learned router and the response verifier know their prompts.

Fits :class:`costwise.router.learned.Domain` on the **training split** of RouteLLM's outcomes (the split the shipped
router and verifier were trained on: ``train_mask``, seed 0): the router's domain on MMLU + GSM8K training prompts
(MMLU subsampled, seeded, to bound the embedding time), the verifier's on GSM8K training prompts. Then reports, as a
check and never as an input, the known share of held-out prompts of the same kind (should be ≈ ``coverage``) and of
FAQ query logs (banking77, Bitext: prompts neither model was trained for, which should mostly be unknown).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from costwise.router.learned import load_routellm, train_mask
from costwise.router.learned.domain import ROUTER_DOMAIN, VERIFIER_DOMAIN, Domain

from .data_sources import OUTCOMES, ROUTELLM, read_query_log
from .router_eval import CACHE_DIR, embed_cached

SAMPLE_SEED = 13


def _split(root: Path, source: str) -> tuple[list[str], list[str]]:
    outcomes = load_routellm(root / ROUTELLM / OUTCOMES[source][0])
    mask = train_mask(outcomes.prompts)
    train = [p for p, t in zip(outcomes.prompts, mask, strict=True) if t]
    return train, [p for p, t in zip(outcomes.prompts, mask, strict=True) if not t]


def _sample(texts: list[str], n: int) -> list[str]:
    return texts if len(texts) <= n else random.Random(SAMPLE_SEED).sample(texts, n)


def _known(domain: Domain, texts: list[str]) -> float:
    return round(float(domain.knows(embed_cached(texts, CACHE_DIR)).mean()), 4)


async def run(data: Path, out: Path | None, mmlu_sample: int, coverage: float, check_sample: int) -> dict[str, Any]:
    mmlu_train, mmlu_test = _split(data, "mmlu")
    gsm_train, gsm_test = _split(data, "gsm8k")
    router_train = _sample(mmlu_train, mmlu_sample) + gsm_train
    router = Domain.fit(embed_cached(router_train, CACHE_DIR), k=256, coverage=coverage)
    verifier = Domain.fit(embed_cached(gsm_train, CACHE_DIR), k=16, coverage=coverage)
    faq = {
        name: _sample([u.text for u in read_query_log(data, name)], check_sample) for name in ("banking77", "bitext")
    }
    held_out = {"mmlu": _sample(mmlu_test, check_sample), "gsm8k": gsm_test}
    report: dict[str, Any] = {
        "benchmark": "router-domain",
        "coverage": coverage,
        "router": {**router.meta, "floor": round(router.floor, 4)},
        "verifier": {**verifier.meta, "floor": round(verifier.floor, 4)},
        "router_known_share": {name: _known(router, texts) for name, texts in (held_out | faq).items()},
        "verifier_known_share": {name: _known(verifier, texts) for name, texts in (held_out | faq).items()},
    }
    if out is not None:
        for domain, name, fitted_on in ((router, ROUTER_DOMAIN, "mmlu+gsm8k"), (verifier, VERIFIER_DOMAIN, "gsm8k")):
            Domain(domain.centroids, domain.floor, {**domain.meta, "data": f"routellm {fitted_on}"}).save(out / name)
        report["saved"] = [str(out / ROUTER_DOMAIN), str(out / VERIFIER_DOMAIN)]
    return report
