"""The cache's own lines: a semantic lookup that served nothing is billed as overhead, netted from the semantic
cache's lever; a hit reported wrong is counted per tenant in the report."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from costwise.billing import LEVERS, Ledger, Line, Pricer, Scope, attribute, ledger_report, render_text
from costwise.catalog import Catalog
from costwise.contracts import UsageEvent

Traffic = tuple[list[UsageEvent], list]  # type: ignore[type-arg]
Event = Callable[..., UsageEvent]


def test_a_semantic_lookup_that_served_nothing_is_billed_its_measured_seconds(
    pricer: Pricer, cache_event: Event
) -> None:
    (line,) = pricer.usage(cache_event("acme", "r1", "cache_lookup", seconds=0.0036))
    assert line.kind == "overhead" and line.key == "o|acme|r1" and line.source == "cache_semantic"
    assert line.amount_nusd == 50  # 0.0036 s at $0.05/h = $5e-8
    assert line.engine_us == 3600 and "0.003600 CPU-s at $0.05/h" in line.basis
    assert line.baseline_nusd == 0  # the no-cache baseline does no lookup


def test_an_unmeasured_lookup_is_billed_the_configured_price(catalog: Catalog, cache_event: Event) -> None:
    pricer = Pricer(
        catalog,
        exact_hit_usd=Decimal(0),
        semantic_hit_usd=Decimal(0),
        tenants=frozenset(),
        semantic_lookup_usd=Decimal("0.000000044"),
    )
    (line,) = pricer.usage(cache_event("acme", "r1", "cache_lookup", seconds=0.0))
    assert line.amount_nusd == 44 and "configured cost" in line.basis


def test_the_report_nets_the_semantic_lever_of_its_misses_and_counts_wrong_hits(
    ledger: Ledger, traffic_lines: list[Line], traffic: Traffic
) -> None:
    tenant = traffic[0][0].tenant
    ledger.append(traffic_lines)
    (overhead,) = [x for x in ledger.lines(tenant=tenant) if x.kind == "overhead"]
    assert overhead.request_id == "ondemand" and overhead.amount_nusd == 50
    costs = {c.request_id: c for c in map(attribute, ledger.request_totals(Scope(tenant=tenant)))}
    missed, hit = costs["ondemand"], costs["semantic"]
    assert missed.savings_nusd["cache_semantic"] == -overhead.amount_nusd  # the miss's lookup counts against the cache
    assert sum(missed.savings_nusd.values()) == missed.baseline_nusd - missed.actual_nusd
    report = ledger_report(ledger, tenant=tenant)
    gross = hit.baseline_nusd - hit.actual_nusd  # what the one semantic hit saved
    assert report.savings_nusd["cache_semantic"] == gross - overhead.amount_nusd
    assert report.cache_overhead_nusd == overhead.amount_nusd
    assert sum(report.savings_nusd[lever] for lever in LEVERS) == report.baseline_nusd - report.actual_nusd
    assert report.wrong_hits == {tenant: 1}
    assert ledger_report(ledger, tenant=f"{tenant}-other").wrong_hits == {}
    text = render_text(report)
    assert "cache hits reported wrong" in text and f"  {tenant}" in text


def test_a_wrong_hit_is_a_line_without_an_amount(pricer: Pricer, cache_event: Event) -> None:
    (line,) = pricer.usage(cache_event("acme", "semantic", "cache_wrong_hit"))
    assert line.kind == "wrong_hit" and line.key == "w|acme|semantic" and line.amount_nusd == 0
