from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from nats.js import JetStreamContext

from costwise.budget import Admission, BudgetExceeded, Budgets, estimate_usd, open_budgets
from costwise.catalog import Price
from costwise.contracts import ChatMessage, ErrorCode, InferenceRequest, SamplingParams
from costwise.messaging import connect


async def test_a_tenant_at_its_limit_gets_a_typed_rejection(js: JetStreamContext, unique: str) -> None:
    budgets = await open_budgets(js)
    await budgets.set_limit(unique, Decimal("1.00"), "month")
    assert isinstance(await budgets.admit(unique, "r1", Decimal("0.60")), Admission)
    refused = await budgets.admit(unique, "r2", Decimal("0.50"))
    assert isinstance(refused, BudgetExceeded) and refused.code == ErrorCode.BUDGET_EXCEEDED
    assert refused.reserved_usd == Decimal("0.60") and "budget of $1.00 per month" in refused.message
    fits = await budgets.admit(unique, "r3", Decimal("0.40"))  # exactly at the limit is still allowed
    assert isinstance(fits, Admission) and fits.remaining_usd == 0


async def test_a_tenant_without_a_budget_is_admitted_unlimited(js: JetStreamContext, unique: str) -> None:
    admission = await (await open_budgets(js)).admit(unique, "r1", Decimal("1000"))
    assert isinstance(admission, Admission) and admission.remaining_usd is None


async def _race(nats_url: str, tenant: str, api_key_id: str | None) -> None:
    """50 requests race for a budget that covers 10.5 of them, from 5 separate connections (5 "routers")."""
    estimate, actual = Decimal("0.010"), Decimal("0.0104")  # each request ends up costing a bit more
    connections = [await connect(nats_url, name=f"router{i}") for i in range(5)]
    try:
        routers = [await open_budgets(nc.jetstream()) for nc in connections]
        await routers[0].set_limit(tenant, estimate * Decimal("10.5"), "day", api_key_id=api_key_id)
        outcomes = await asyncio.gather(
            *(routers[i % 5].admit(tenant, f"r{i}", estimate, api_key_id=api_key_id) for i in range(50))
        )
        admitted = [o for o in outcomes if isinstance(o, Admission)]
        assert len(admitted) == 10 and all(isinstance(o, BudgetExceeded) for o in outcomes if o not in admitted)
        state = await routers[0].state(tenant, api_key_id=api_key_id)
        assert state is not None and state.reserved_usd == 10 * estimate <= state.limit_usd

        async def ledger_total(_since_ms: int) -> Decimal:
            return actual * len(admitted)

        done = [a.request_id for a in admitted]
        settled = await routers[1].settle(tenant, done, spent_since=ledger_total, api_key_id=api_key_id)
        assert settled is not None and not settled.reservations
        assert settled.spent_usd - settled.limit_usd <= actual  # overshoot ≤ one request's cost
    finally:
        for nc in connections:
            await nc.close()


async def test_fifty_concurrent_admissions_overshoot_by_at_most_one_request(nats_url: str, unique: str) -> None:
    await _race(nats_url, unique, None)


async def test_fifty_concurrent_admissions_at_a_keys_edge_overshoot_by_at_most_one_request(
    nats_url: str, unique: str
) -> None:
    await _race(nats_url, unique, "k1")  # the tenant has no budget: only the key's holds them back


async def test_a_key_at_its_limit_is_refused_while_another_key_of_the_tenant_passes(
    js: JetStreamContext, unique: str
) -> None:
    budgets = await open_budgets(js)
    await budgets.set_limit(unique, Decimal("10"), "month")
    await budgets.set_limit(unique, Decimal("1"), "month", api_key_id="spender")
    assert isinstance(await budgets.admit(unique, "r1", Decimal("0.9"), api_key_id="spender"), Admission)
    refused = await budgets.admit(unique, "r2", Decimal("0.5"), api_key_id="spender")
    assert isinstance(refused, BudgetExceeded) and refused.api_key_id == "spender"
    assert "API key 'spender' of tenant" in refused.message
    other = await budgets.admit(unique, "r3", Decimal("5"), api_key_id="other")  # no budget of its own
    assert isinstance(other, Admission) and other.remaining_usd == Decimal("4.1")  # the tenant's: 10 - 0.9 - 5
    keyless = await budgets.admit(unique, "r4", Decimal("4.05"))  # the tenant has $0.05 left
    assert isinstance(keyless, Admission)
    tenant_refuses = await budgets.admit(unique, "r5", Decimal("0.08"), api_key_id="spender")  # key: 0.1 left
    assert isinstance(tenant_refuses, BudgetExceeded) and tenant_refuses.api_key_id is None  # the tenant's budget
    key = await budgets.state(unique, api_key_id="spender")
    assert key is not None and set(key.reservations) == {"r1"}  # the key's reservation was released again
    tenant = await budgets.state(unique)
    assert tenant is not None and tenant.api_key_id is None and set(tenant.reservations) == {"r1", "r3", "r4"}


async def test_a_key_budget_never_collides_with_a_tenants(js: JetStreamContext, unique: str) -> None:
    budgets = await open_budgets(js)
    await budgets.set_limit(unique, Decimal("0"), "total", api_key_id="k")
    assert await budgets.state(unique) is None  # the tenant itself still has none
    assert await budgets.state(f"{unique}x", api_key_id="k") is None  # nor does another tenant's key "k"
    with pytest.raises(ValueError, match="not an API key id"):
        await budgets.admit(unique, "r", Decimal(1), api_key_id="a.b")


async def test_settling_twice_changes_nothing_and_frees_the_budget(js: JetStreamContext, unique: str) -> None:
    budgets = await open_budgets(js)
    await budgets.set_limit(unique, Decimal("1"), "total")
    await budgets.admit(unique, "r1", Decimal("0.9"))

    async def ledger(_since_ms: int) -> Decimal:
        return Decimal("0.25")

    first = await budgets.settle(unique, ["r1"], spent_since=ledger)
    again = await budgets.settle(unique, ["r1"], spent_since=ledger)
    assert first == again and again is not None and again.spent_usd == Decimal("0.25") and not again.reservations
    assert isinstance(await budgets.admit(unique, "r2", Decimal("0.75")), Admission)


async def test_a_new_period_starts_from_zero(js: JetStreamContext, unique: str) -> None:
    now = [1_764_331_200.0]  # 2025-11-28 12:00 UTC
    budgets = Budgets(await js.key_value("costwise-budgets"), clock=lambda: now[0])
    await budgets.set_limit(unique, Decimal("1"), "day")

    async def ledger(_since_ms: int) -> Decimal:
        return Decimal("1")

    await budgets.settle(unique, [], spent_since=ledger)
    assert isinstance(await budgets.admit(unique, "r1", Decimal("0.01")), BudgetExceeded)
    now[0] += 24 * 3600
    assert isinstance(await budgets.admit(unique, "r1", Decimal("0.01")), Admission)


async def test_stale_reservations_expire(js: JetStreamContext, unique: str) -> None:
    now = [1_764_331_200.0]
    budgets = Budgets(await js.key_value("costwise-budgets"), clock=lambda: now[0], reservation_ttl_s=60)
    await budgets.set_limit(unique, Decimal("1"), "total")
    await budgets.admit(unique, "lost", Decimal("1"))
    assert isinstance(await budgets.admit(unique, "r2", Decimal("0.5")), BudgetExceeded)
    now[0] += 61
    assert isinstance(await budgets.admit(unique, "r2", Decimal("0.5")), Admission)


def test_estimate_bounds_the_prompt_and_takes_max_tokens_for_the_answer() -> None:
    price = Price(usd_per_m_input=Decimal(1), usd_per_m_output=Decimal(2))
    req = InferenceRequest(
        request_id="r",
        tenant="t",
        messages=[ChatMessage(role="user", content="x" * 300)],
        sampling=SamplingParams(max_tokens=100),
    )
    assert estimate_usd(price, req) == (Decimal(104) * 1 + Decimal(100) * 2) / 1_000_000


async def test_a_name_that_is_not_a_tenant_is_refused(js: JetStreamContext) -> None:
    budgets = await open_budgets(js)
    for bad in ("a.b", "a b", "x" * 65, ""):
        with pytest.raises(ValueError, match="not a tenant name"):
            await budgets.admit(bad, "r", Decimal(1))


async def test_a_tenant_without_a_budget_is_not_looked_up_again_for_a_second(js: JetStreamContext, unique: str) -> None:
    now = [1_000.0]
    kv = await js.key_value("costwise-budgets")
    router = Budgets(kv, clock=lambda: now[0], absent_ttl_s=1.0)  # the router's view
    billing = Budgets(kv, clock=lambda: now[0])  # another process sets the budget
    assert (await router.admit(unique, "r1", Decimal("1"))).remaining_usd is None
    await billing.set_limit(unique, Decimal("0.5"), "month")
    assert isinstance(await router.admit(unique, "r2", Decimal("1")), Admission)  # still remembered as absent
    now[0] += 1.5
    assert isinstance(await router.admit(unique, "r3", Decimal("1")), BudgetExceeded)  # and now enforced
