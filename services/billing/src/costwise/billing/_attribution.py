"""Savings attribution: from the no-lever baseline to what a request actually cost, one lever at a time.

The chain for a request answered by a model is
``baseline → (routing) → tier reference → (provider) → unquantized → (quantization) → on demand → (spot) → tokens
at the actual price → (+ re-prefill after resumes) → actual``,
each level a sum of integer nano-dollars stored on the ledger lines, so the parts add up to
``baseline - actual`` exactly (a telescoping sum). A cache hit replaces the whole chain with one lever. A request
the semantic cache looked up and did not answer paid for that lookup (``overhead``): it is part of its actual
cost and counts against the semantic cache's lever, so that lever is net of its own cost.
"""

from __future__ import annotations

import msgspec

from ._ledger import RequestTotals

__all__ = ["LEVERS", "RequestCost", "attribute"]

LEVERS = ("cache_exact", "cache_semantic", "routing", "provider", "quantization", "spot", "resume_prefill")
"""The parts of ``baseline - actual``. ``resume_prefill`` is no lever: it is the re-prefill a resumed job cost
(always ≤ 0), kept apart so that no lever's saving hides it."""
_CACHE = ("cache_exact", "cache_semantic")


class RequestCost(msgspec.Struct, frozen=True, kw_only=True):
    """One request's baseline, actual cost and savings per lever, in nano-dollars."""

    tenant: str
    request_id: str
    source: str
    """How it was answered (``engine``, ``provider``, ``cache_exact``, ``cache_semantic``), ``open`` if no result yet."""
    status: str
    ts_ms: int
    attempts: int
    baseline_nusd: int
    actual_nusd: int
    savings_nusd: dict[str, int]


def attribute(t: RequestTotals) -> RequestCost:
    """The attribution of one request from its summed lines (attempts and, once it arrived, its result)."""
    actual = t.amount_nusd + t.recompute_nusd + t.result_amount_nusd + t.overhead_nusd
    savings = dict.fromkeys(LEVERS, 0)
    if t.source in _CACHE:
        baseline = t.result_baseline_nusd
        savings[t.source] = baseline - actual
    else:
        # A failed or unfinished request has no answer to price at baseline: the baseline runs its attempts.
        baseline = t.result_baseline_nusd if t.status == "ok" else t.baseline_nusd
        savings["routing"] = baseline - t.tier_nusd
        savings["provider"] = t.tier_nusd - t.unquantized_nusd
        savings["quantization"] = t.unquantized_nusd - t.on_demand_nusd
        savings["spot"] = t.on_demand_nusd - t.amount_nusd
        savings["resume_prefill"] = -t.recompute_nusd
        savings["cache_semantic"] = -t.overhead_nusd
    return RequestCost(
        tenant=t.tenant,
        request_id=t.request_id,
        source=t.source or "open",
        status=t.status or "open",
        ts_ms=t.result_ms if t.result_ms is not None else t.last_ms,
        attempts=t.attempts,
        baseline_nusd=baseline,
        actual_nusd=actual,
        savings_nusd=savings,
    )
