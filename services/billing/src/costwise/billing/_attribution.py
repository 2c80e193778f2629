"""Savings attribution: from the no-lever baseline to what a request actually cost, one lever at a time.

The chain for a request answered by a model is
``baseline → (routing) → tier reference → (provider) → unquantized → (quantization) → on demand → (spot) → actual``,
each level a sum of integer nano-dollars stored on the ledger lines, so the parts add up to
``baseline - actual`` exactly (a telescoping sum). A cache hit replaces the whole chain with one lever.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import msgspec

from ._ledger import Line

__all__ = ["LEVERS", "RequestCost", "attribute", "by_request"]

LEVERS = ("cache_exact", "cache_semantic", "routing", "provider", "quantization", "spot")


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


def by_request(lines: Iterable[Line]) -> list[Sequence[Line]]:
    """Lines grouped per (tenant, request), in first-seen order."""
    groups: dict[tuple[str, str], list[Line]] = {}
    for line in lines:
        groups.setdefault((line.tenant, line.request_id), []).append(line)
    return list(groups.values())


def attribute(lines: Sequence[Line]) -> RequestCost:
    """The attribution of one request from all its lines (attempts and, once it arrived, its result)."""
    result = next((line for line in lines if line.kind == "result"), None)
    attempts = [line for line in lines if line.kind == "attempt"]
    actual = sum(line.amount_nusd for line in lines)
    savings = dict.fromkeys(LEVERS, 0)
    if result is not None and result.source in ("cache_exact", "cache_semantic"):
        baseline = result.baseline_nusd
        savings[result.source] = baseline - actual
    else:
        # A failed or unfinished request has no answer to price at baseline: the baseline runs its attempts.
        answered = result is not None and result.status == "ok"
        baseline = result.baseline_nusd if result is not None and answered else sum(a.baseline_nusd for a in attempts)
        tier, unquantized, on_demand = (sum(getattr(a, f) for a in attempts) for f in _LEVELS)
        savings["routing"] = baseline - tier
        savings["provider"] = tier - unquantized
        savings["quantization"] = unquantized - on_demand
        savings["spot"] = on_demand - actual
    return RequestCost(
        tenant=lines[0].tenant,
        request_id=lines[0].request_id,
        source=result.source if result is not None else "open",
        status=result.status if result is not None else "open",
        ts_ms=result.ts_ms if result is not None else max(a.ts_ms for a in attempts),
        attempts=len(attempts),
        baseline_nusd=baseline,
        actual_nusd=actual,
        savings_nusd=savings,
    )


_LEVELS = ("tier_nusd", "unquantized_nusd", "on_demand_nusd")
