"""``costwise-bench router-cascade``: the cascade's operating point for the router the service ships.

``router-eval`` on GSM8K alone chooses its (direct, escalate) pair for a router trained on GSM8K alone, but the
service runs the router trained on MMLU + GSM8K together: its scores mean something else, and the shipped pair's
``direct_below`` sent 2 % of held-out GSM8K prompts straight to the large tier (the GSM8K-only router: 34 %).
Here the pair is chosen for the combined router, the way ``router-eval`` chooses it: the combined router's
**out-of-fold** scores on GSM8K's training rows, the verifier's out-of-fold scores on Mixtral's answers to them,
``cascade_point`` (cheapest pair keeping ``quality`` in 95 % of bootstrap resamples). The held-out GSM8K half is
only scored, never used to choose. With ``--out`` the router (retrained on the same rows, the same way) and the
verifier carrying the new pair are written together, so the artifacts always come from one run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from costwise.router.learned import (
    Outcomes,
    ResponseVerifier,
    cascade_point,
    cross_fit,
    evaluate,
    evaluate_cascade,
    load_routellm,
    train_mask,
    train_router,
    verifier_matrix,
)

from .data_sources import OUTCOMES, ROUTELLM
from .router_eval import CACHE_DIR, embed_cached


def _split(outcomes: Outcomes) -> tuple[Outcomes, Outcomes]:
    train = train_mask(outcomes.prompts)
    return outcomes.subset(train), outcomes.subset(~train)


def _policy(policy: Any) -> dict[str, float]:
    return {
        "quality": round(policy.accuracy / policy.strong_accuracy, 4),
        "strong_call_share": round(policy.strong_call_share, 4),
        "weak_call_share": round(policy.weak_call_share, 4),
        "cost_reduction": round(policy.cost_reduction, 4),
    }


async def run(data: Path, quality: float, price_ratio: float, out: Path | None) -> dict[str, Any]:
    tr, _ = _split(load_routellm(data / ROUTELLM))
    meta = {"data": "routellm", "weak": tr.weak, "strong": tr.strong, "train_rows": len(tr)}
    router, p_oof = train_router(embed_cached(tr.prompts, CACHE_DIR), tr.prompts, tr.weak_ok, tr.strong_ok, meta=meta)
    gsm_tr, gsm_te = _split(load_routellm(data / ROUTELLM / OUTCOMES["gsm8k"][0]))
    assert gsm_tr.weak_responses is not None and gsm_te.weak_responses is not None
    row = {prompt: i for i, prompt in enumerate(tr.prompts)}
    p_train = p_oof[[row[p] for p in gsm_tr.prompts]]
    v_train, head = cross_fit(verifier_matrix(gsm_tr.prompts, gsm_tr.weak_responses), gsm_tr.weak_ok, c=0.3)
    point = cascade_point(p_train, v_train, gsm_tr.weak_ok, gsm_tr.strong_ok, quality, price_ratio=price_ratio)
    p_test = router.p_small_ok(embed_cached(gsm_te.prompts, CACHE_DIR), gsm_te.prompts)
    v_test = head.predict(verifier_matrix(gsm_te.prompts, gsm_te.weak_responses))
    threshold = router.threshold(quality)
    report: dict[str, Any] = {
        "benchmark": "router-cascade",
        "quality_target": quality,
        "price_ratio": price_ratio,
        "train_rows": len(tr),
        "gsm8k_train_rows": len(gsm_tr),
        "gsm8k_held_out_rows": len(gsm_te),
        "direct_below": round(float(np.clip(point.direct, 0, 1)), 4),
        "escalate_below": round(float(np.clip(point.escalate, 0, 1)), 4),
        "router_threshold": round(threshold, 4),
        "held_out_cascade": _policy(
            evaluate_cascade(point, p_test, v_test, gsm_te.weak_ok, gsm_te.strong_ok, price_ratio)
        ),
        "held_out_router_only": _policy(
            evaluate(p_test < threshold, gsm_te.weak_ok, gsm_te.strong_ok, price_ratio, weak_calls=p_test >= threshold)
        ),
    }
    if out is not None:
        router.save(out / "router.npz")
        verifier_meta = {**meta, "data": "gsm8k_dev_responses.csv", "quality": quality, "train_rows": len(gsm_tr)}
        verifier_meta |= {"direct_below": report["direct_below"], "router": "router.npz of the same run"}
        ResponseVerifier(head, point.escalate, verifier_meta).save(out / "verifier.npz")
        report["saved"] = [str(out / "router.npz"), str(out / "verifier.npz")]
    return report
