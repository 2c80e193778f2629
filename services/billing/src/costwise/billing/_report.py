"""The cost report: totals, cost per query, hit rates, routing mix and the savings waterfall, from the ledger."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal

import msgspec

from ._attribution import LEVERS, RequestCost, attribute
from ._ledger import Ledger, RequestTotals, RouteTotals, Scope
from ._pricing import NANO

__all__ = ["Report", "TimeBucket", "build_report", "ledger_report", "per_query", "render_text", "usd"]

LEVER_NAMES = {
    "cache_exact": "exact cache",
    "cache_semantic": "semantic cache",
    "routing": "cascade / routing",
    "provider": "provider / backend choice",
    "quantization": "quantization",
    "spot": "spot vs on demand",
    "resume_prefill": "re-prefill after preemption",
}
_HOUR_MS, _DAY_MS = 3_600_000, 86_400_000


class TimeBucket(msgspec.Struct, frozen=True, kw_only=True):
    start_ms: int
    requests: int
    actual_nusd: int
    baseline_nusd: int


class Report(msgspec.Struct, frozen=True, kw_only=True):
    """Everything ``costwise report`` shows; amounts in integer nano-dollars (exact on every database)."""

    tenant: str | None
    since_ms: int
    api_key_id: str | None = None
    """Set when the report covers one API key's requests only."""
    requests: int
    answered: int
    errors: int
    in_flight: int
    baseline_nusd: int
    actual_nusd: int
    savings_nusd: dict[str, int]
    sources: dict[str, int]
    """Requests per way they were answered (``engine``, ``provider``, ``cache_exact``, ``cache_semantic``, …)."""
    routing: list[RouteTotals]
    spend_by_tenant: dict[str, int]
    over_time: list[TimeBucket]
    bucket_ms: int
    cost_per_query_nusd: int
    """Actual cost of the finished requests over their number (in-flight ones are not queries yet)."""
    baseline_per_query_nusd: int
    cache_overhead_nusd: int = 0
    """What semantic lookups that served nothing cost (already netted from the semantic cache's lever)."""
    wrong_hits: dict[str, int] = {}
    """Cache hits reported wrong (``costwise cache wrong``), per tenant."""


def usd(nano: int | Decimal) -> Decimal:
    return Decimal(nano) / NANO


def ledger_report(
    ledger: Ledger, *, tenant: str | None = None, since_ms: int = 0, api_key_id: str | None = None
) -> Report:
    """The report of ``tenant`` (or everyone; or one API key) from ``since_ms`` on; the database does the summing."""
    scope = Scope(tenant=tenant, api_key_id=api_key_id, since_ms=since_ms)
    return build_report(ledger.request_totals(scope), ledger.route_totals(scope), scope, ledger.wrong_hits(scope))


def build_report(
    totals: Sequence[RequestTotals],
    routing: Sequence[RouteTotals],
    scope: Scope,
    wrong_hits: Mapping[str, int] | None = None,
) -> Report:
    """The report from per-request totals, the routing mix and the wrong hits reported per tenant."""
    costs = [attribute(t) for t in totals]
    finished = [c for c in costs if c.status != "open"]
    bucket = _HOUR_MS if _span_ms(costs) <= 2 * _DAY_MS else _DAY_MS
    spend: Counter[str] = Counter()
    for cost in costs:
        spend[cost.tenant] += cost.actual_nusd
    return Report(
        tenant=scope.tenant,
        since_ms=scope.since_ms,
        api_key_id=scope.api_key_id,
        requests=len(finished),
        answered=sum(c.status == "ok" for c in finished),
        errors=sum(c.status == "error" for c in finished),
        in_flight=len(costs) - len(finished),
        baseline_nusd=sum(c.baseline_nusd for c in costs),
        actual_nusd=sum(c.actual_nusd for c in costs),
        savings_nusd={lever: sum(c.savings_nusd[lever] for c in costs) for lever in LEVERS},
        sources=dict(sorted(Counter(c.source for c in finished).items())),
        routing=list(routing),
        spend_by_tenant=dict(sorted(spend.items())),
        over_time=_over_time(finished, bucket),
        bucket_ms=bucket,
        cost_per_query_nusd=per_query(sum(c.actual_nusd for c in finished), len(finished)),
        baseline_per_query_nusd=per_query(sum(c.baseline_nusd for c in finished), len(finished)),
        cache_overhead_nusd=sum(t.overhead_nusd for t in totals),
        wrong_hits=dict(wrong_hits or {}),
    )


def per_query(total_nusd: int, queries: int) -> int:
    """Cost per query, rounded to a nano-dollar (the report's and the metrics' one rule)."""
    return round(Decimal(total_nusd) / queries) if queries else 0


def _span_ms(costs: Sequence[RequestCost]) -> int:
    stamps = [c.ts_ms for c in costs]
    return max(stamps) - min(stamps) if stamps else 0


def _over_time(costs: Iterable[RequestCost], bucket_ms: int) -> list[TimeBucket]:
    buckets: dict[int, list[RequestCost]] = {}
    for cost in costs:
        buckets.setdefault(cost.ts_ms - cost.ts_ms % bucket_ms, []).append(cost)
    return [
        TimeBucket(
            start_ms=start,
            requests=len(group),
            actual_nusd=sum(c.actual_nusd for c in group),
            baseline_nusd=sum(c.baseline_nusd for c in group),
        )
        for start, group in sorted(buckets.items())
    ]


def _when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _pct(part: int | Decimal, whole: int | Decimal) -> str:
    return f"{100 * Decimal(part) / Decimal(whole):5.1f} %" if whole else "     -"


def render_text(report: Report) -> str:
    """The report as the terminal shows it."""
    key = f", API key {report.api_key_id}" if report.api_key_id else ""
    out = [f"costwise report — tenant {report.tenant or 'all'}{key}, since {_when(report.since_ms)}", ""]
    out.append(
        f"requests        {report.requests:,} (answered {report.answered:,}, errors {report.errors:,}, "
        f"in flight {report.in_flight:,})"
    )
    per_query, baseline_per_query = usd(report.cost_per_query_nusd), usd(report.baseline_per_query_nusd)
    out.append(f"cost per query  ${per_query:.9f}  (baseline ${baseline_per_query:.9f})")
    saved = report.baseline_nusd - report.actual_nusd
    out.append(
        f"total           ${usd(report.actual_nusd):.6f}  (baseline ${usd(report.baseline_nusd):.6f}, "
        f"saved ${usd(saved):.6f} = {_pct(saved, report.baseline_nusd).strip()})"
    )
    out += ["", "how requests were answered"]
    out += [f"  {source:<28}{n:>8,}  {_pct(n, report.requests)}" for source, n in report.sources.items()]
    out += [
        "",
        "routing mix (attempts)",
        f"  {'backend':<22}{'stage':<15}{'attempts':>9}{'tokens in':>12}{'tokens out':>12}{'cost':>14}",
    ]
    out += [
        f"  {r.backend:<22}{r.stage:<15}{r.attempts:>9,}{r.tokens_in:>12,}{r.tokens_out:>12,}"
        f"  ${usd(r.actual_nusd):>11.6f}"
        for r in report.routing
    ]
    out += ["", "savings waterfall", f"  {'baseline (no levers)':<30}${usd(report.baseline_nusd):>14.6f}"]
    for lever, amount in report.savings_nusd.items():
        out.append(f"  - {LEVER_NAMES[lever]:<28}${usd(amount):>14.6f}  {_pct(amount, report.baseline_nusd)}")
    out.append(f"  {'= actual':<30}${usd(report.actual_nusd):>14.6f}")
    out.append(f"  (semantic cache net of its lookups that served nothing: ${usd(report.cache_overhead_nusd):.9f})")
    out += ["", "cache hits reported wrong (costwise cache wrong)"]
    out += [f"  {tenant:<28}{n:>8,}" for tenant, n in report.wrong_hits.items()] or ["  none"]
    return "\n".join(out) + "\n"
