"""A pulled batch without NATS or a database: its lines, its refusals, the budgets it settles."""

from __future__ import annotations

import msgspec

from costwise.billing import Line, Pricer
from costwise.billing._batch import priced, settlements
from costwise.contracts import ErrorCode, Result, UsageEvent
from costwise.messaging import Refusal

Traffic = tuple[list[UsageEvent], list[Result]]


def test_a_batch_prices_the_billable_events_and_refuses_the_rest_by_index(pricer: Pricer, traffic: Traffic) -> None:
    usage = traffic[0][:3]

    def to_lines(event: UsageEvent) -> list[Line]:
        if event.request_id == "ondemand":
            raise RuntimeError("a bug")  # refused (internal), not retried forever
        return pricer.usage(event)

    unknown = msgspec.structs.replace(usage[2], pool="nowhere")
    lines, refusals = priced([usage[0], usage[1], unknown], to_lines)
    assert lines == pricer.usage(usage[0])
    assert refusals[1] == Refusal(ErrorCode.INTERNAL, "RuntimeError: a bug")
    assert refusals[2].code is ErrorCode.UNKNOWN_POOL and "nowhere" in refusals[2].reason
    assert set(refusals) == {1, 2}


def test_a_batch_settles_each_tenant_and_key_it_touches_closing_its_finished_requests(
    traffic_lines: list[Line],
) -> None:
    owners = settlements(traffic_lines)
    tenant = traffic_lines[0].tenant
    assert set(owners) == {(tenant, None), (tenant, "k1"), (tenant, "k2")}
    assert sorted(owners[(tenant, "k1")]) == ["ondemand", "spot"]  # the key's results only
    assert owners[(tenant, "k2")] == ["groq"]
    assert len(owners[(tenant, None)]) == 10  # every result closes the tenant's reservation
