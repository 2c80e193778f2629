from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest

from costwise.billing import LEVERS, Ledger, Line, Pricer, Scope, Unbillable, attribute, ledger_report, render_text
from costwise.catalog import Catalog
from costwise.contracts import ErrorCode, UsageEvent

Traffic = tuple[list[UsageEvent], list]  # type: ignore[type-arg]


def test_attribution_parts_sum_exactly_to_baseline_minus_actual(
    ledger: Ledger, traffic_lines: list[Line], traffic: Traffic
) -> None:
    ledger.append(traffic_lines)
    costs = [attribute(totals) for totals in ledger.request_totals(Scope(tenant=traffic[0][0].tenant))]
    for cost in costs:
        assert sum(cost.savings_nusd.values()) == cost.baseline_nusd - cost.actual_nusd, cost
    pulled = {lever for cost in costs for lever, amount in cost.savings_nusd.items() if amount}
    assert pulled == set(LEVERS)  # the traffic exercises every lever
    by_id = {c.request_id: c for c in costs}
    assert by_id["large"].savings_nusd == dict.fromkeys(LEVERS, 0)  # the baseline backend saves nothing
    assert by_id["openai"].savings_nusd["provider"] < 0  # a pricier provider is a negative saving
    assert by_id["cascade"].savings_nusd["routing"] < 0  # an escalation cost more than going large at once
    assert (
        by_id["exact"].actual_nusd == 0 and by_id["exact"].savings_nusd["cache_exact"] == by_id["exact"].baseline_nusd
    )
    assert by_id["inflight"].status == "open"


def test_prices_come_from_the_catalog_exactly(pricer: Pricer, catalog: Catalog, traffic: Traffic) -> None:
    event = traffic[0][0]  # small-spot, 400 in / 120 out
    line = pricer.attempt(event)
    spot = catalog.backend("small-spot")
    expected = (400 * spot.price.usd_per_m_input + 120 * spot.price.usd_per_m_output) / 1_000_000
    assert line.amount_nusd == int((expected * 10**9).to_integral_value())
    assert line.on_demand_nusd > line.amount_nusd and line.unquantized_nusd > line.on_demand_nusd
    assert "small-spot (spot)" in line.basis


def test_a_backend_outside_the_catalog_or_every_tier_is_unbillable(catalog: Catalog, traffic: Traffic) -> None:
    event = traffic[0][0]
    pricer = Pricer(catalog, exact_hit_usd=Decimal(0), semantic_hit_usd=Decimal(0), tenants=frozenset({"someone"}))
    with pytest.raises(Unbillable) as caught:
        pricer.attempt(event)
    assert caught.value.code == ErrorCode.UNKNOWN_TENANT
    orphan = msgspec.structs.replace(catalog, tiers=[t for t in catalog.tiers if t.name != "small"], aliases={})
    with pytest.raises(Unbillable) as caught:
        Pricer(orphan, exact_hit_usd=Decimal(0), semantic_hit_usd=Decimal(0), tenants=frozenset()).attempt(event)
    assert caught.value.code == ErrorCode.UNPRICED and "no price basis" in caught.value.reason


def test_appending_the_same_lines_twice_changes_nothing(
    ledger: Ledger, traffic_lines: list[Line], traffic: Traffic
) -> None:
    tenant = traffic[0][0].tenant
    lines = traffic_lines
    ledger.append(lines)
    first = ledger.lines(tenant=tenant)
    ledger.append(lines)
    ledger.append(lines[:3] + lines[:3])  # duplicates inside one batch too
    assert ledger.lines(tenant=tenant) == first and len(first) == len(lines)
    assert ledger.spent_nusd(tenant, 0) == sum(line.amount_nusd for line in lines)


def test_postgresql_and_sqlite_give_identical_reports(
    sqlite_ledger: Ledger, pg_ledger: Ledger, traffic_lines: list[Line], traffic: Traffic
) -> None:
    tenant = traffic[0][0].tenant
    reports = []
    for ledger in (sqlite_ledger, pg_ledger):
        ledger.append(traffic_lines)
        reports.append(ledger_report(ledger, tenant=tenant))
    assert msgspec.json.encode(reports[0]) == msgspec.json.encode(reports[1])
    report = reports[0]
    assert sum(report.savings_nusd.values()) == report.baseline_nusd - report.actual_nusd
    assert report.requests == 10 and report.in_flight == 1 and report.errors == 1
    assert report.sources == {"cache_exact": 1, "cache_semantic": 1, "engine": 5, "none": 1, "provider": 2}
    text = render_text(report)
    assert "savings waterfall" in text and "spot vs on demand" in text and "= actual" in text


def test_since_takes_a_date_or_a_span_back_from_now() -> None:
    import argparse

    from costwise.billing._cli import since_ms

    now = 1_764_331_200.0
    assert since_ms("2025-11-28", now) == 1_764_288_000_000
    assert since_ms("2025-11-28T12:00:00+01:00", now) == 1_764_327_600_000
    assert since_ms("24h", now) == (now - 86_400) * 1000 and since_ms("2w", now) == (now - 14 * 86_400) * 1000
    assert since_ms(None, now) == 0
    with pytest.raises(argparse.ArgumentTypeError):
        since_ms("last tuesday", now)


def test_free_text_with_nul_or_over_long_is_stored_not_a_poison_batch(
    ledger: Ledger, pricer: Pricer, traffic: Traffic
) -> None:
    event = msgspec.structs.replace(traffic[0][0], model="\x00" + "m" * 5000)
    result = msgspec.structs.replace(traffic[1][0], model="m" * 5000, pool="p" * 500)
    ledger.append([pricer.attempt(event), pricer.result(result, now_ms=0)])
    stored = ledger.lines(tenant=event.tenant)
    assert len(stored) == 2 and all(len(line.model) == 256 for line in stored)


def test_a_cache_hit_is_billed_its_measured_cpu_time(catalog: Catalog, traffic: Traffic) -> None:
    pricer = Pricer(
        catalog,
        exact_hit_usd=Decimal(0),
        semantic_hit_usd=Decimal("0.000002"),
        tenants=frozenset(),
        cpu_usd_per_hour=Decimal("0.05"),
    )
    (unmeasured,) = [r for r in traffic[1] if r.source == "cache_semantic"]
    assert unmeasured.cache is not None and unmeasured.cache.compute_s == 0
    assert pricer.result(unmeasured, now_ms=0).amount_nusd == 2_000  # the configured fallback
    measured = msgspec.structs.replace(unmeasured, cache=msgspec.structs.replace(unmeasured.cache, compute_s=0.0036))
    line = pricer.result(measured, now_ms=0)
    assert line.amount_nusd == 50  # 0.0036 s at $0.05/h = $5e-8
    assert line.engine_us == 3600 and "0.003600 CPU-s at $0.05/h" in line.basis


def test_a_resumed_attempts_re_prefill_is_a_cost_line_of_its_own(
    ledger: Ledger, pricer: Pricer, catalog: Catalog, traffic: Traffic
) -> None:
    (resumed,) = [e for e in traffic[0] if e.recomputed_prompt_tokens]
    attempt, refill = pricer.usage(resumed)
    spot = catalog.backend("small-spot").price
    assert refill.kind == "recompute" and refill.tokens_in == resumed.recomputed_prompt_tokens == 260
    assert refill.amount_nusd == int((260 * spot.usd_per_m_input * 1000).to_integral_value())  # at the input price
    assert attempt.amount_nusd == pricer.attempt(resumed).amount_nusd  # the attempt itself is priced as before
    ledger.append([attempt, refill])
    (cost,) = [attribute(t) for t in ledger.request_totals(Scope(tenant=resumed.tenant))]
    assert cost.savings_nusd["resume_prefill"] == -refill.amount_nusd
    assert cost.actual_nusd == attempt.amount_nusd + refill.amount_nusd
    assert sum(cost.savings_nusd.values()) == cost.baseline_nusd - cost.actual_nusd


def test_lines_carry_the_api_key_and_a_key_can_be_reported_alone(
    ledger: Ledger, traffic_lines: list[Line], traffic: Traffic
) -> None:
    tenant = traffic[0][0].tenant
    ledger.append(traffic_lines)
    k1 = [line for line in traffic_lines if line.api_key_id == "k1"]
    # two attempts, two results, one semantic lookup that missed
    assert len(k1) == 5 and ledger.spent_nusd(tenant, 0, api_key_id="k1") == sum(x.amount_nusd for x in k1)
    report = ledger_report(ledger, tenant=tenant, api_key_id="k1")
    assert report.api_key_id == "k1" and report.requests == 2 and report.actual_nusd == sum(x.amount_nusd for x in k1)
    assert {r.backend for r in report.routing} == {"small-spot", "small-on-demand"}
    assert "API key k1" in render_text(report)
