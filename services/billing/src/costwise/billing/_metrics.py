"""Prometheus metrics from running per-tenant sums: a scrape reads O(tenants) numbers, never the ledger.

The sums are seeded once from the ledger at start and then moved by each committed batch: the batch's
requests' attribution after the commit minus before it (both read from the ledger, so a redelivered event,
which changes nothing in the ledger, changes nothing here either).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ._attribution import attribute
from ._ledger import RequestTotals
from ._report import per_query, usd

__all__ = ["Rollup", "TenantSums", "registry_for"]


@dataclass
class TenantSums:
    """What the metrics show of one tenant, as the report would compute it over the whole ledger."""

    actual_nusd: int = 0
    finished: int = 0
    finished_actual_nusd: int = 0
    savings_nusd: Counter[str] = field(default_factory=Counter)

    @property
    def cost_per_query_nusd(self) -> int:
        return per_query(self.finished_actual_nusd, self.finished)


class Rollup:
    """Running per-tenant sums of spend, finished requests and savings per lever."""

    def __init__(self) -> None:
        self._tenants: dict[str, TenantSums] = {}
        self._lock = threading.Lock()  # scrapes run on the HTTP server's thread

    def add(self, totals: Iterable[RequestTotals], sign: int = 1) -> None:
        with self._lock:
            for cost in map(attribute, totals):
                sums = self._tenants.setdefault(cost.tenant, TenantSums())
                sums.actual_nusd += sign * cost.actual_nusd
                if cost.status != "open":
                    sums.finished += sign
                    sums.finished_actual_nusd += sign * cost.actual_nusd
                sums.savings_nusd.update({lever: sign * amount for lever, amount in cost.savings_nusd.items()})

    def apply(self, before: Iterable[RequestTotals], after: Iterable[RequestTotals]) -> None:
        """Move the sums by a commit: the touched requests' totals before it out, after it in."""
        self.add(before, -1)
        self.add(after, 1)

    def snapshot(self) -> dict[str, TenantSums]:
        with self._lock:
            return {
                tenant: TenantSums(s.actual_nusd, s.finished, s.finished_actual_nusd, Counter(s.savings_nusd))
                for tenant, s in sorted(self._tenants.items())
            }


class _RollupCollector(Collector):
    def __init__(self, rollup: Rollup) -> None:
        self.rollup = rollup

    def collect(self) -> Iterator[GaugeMetricFamily]:
        spend = GaugeMetricFamily("costwise_billing_spend_usd", "Spend recorded in the ledger", labels=["tenant"])
        per_query_usd = GaugeMetricFamily(
            "costwise_billing_cost_per_query_usd", "Actual cost per finished request", labels=["tenant"]
        )
        savings = GaugeMetricFamily(
            "costwise_billing_savings_usd", "Saved against the no-lever baseline", labels=["tenant", "lever"]
        )
        for tenant, sums in self.rollup.snapshot().items():
            spend.add_metric([tenant], float(usd(sums.actual_nusd)))
            per_query_usd.add_metric([tenant], float(usd(sums.cost_per_query_nusd)))
            for lever, amount in sums.savings_nusd.items():
                savings.add_metric([tenant, lever], float(usd(amount)))
        yield from (spend, per_query_usd, savings)


def registry_for(rollup: Rollup) -> CollectorRegistry:
    """A registry of its own (no process-global state) exposing ``rollup``'s metrics."""
    registry = CollectorRegistry()
    registry.register(_RollupCollector(rollup))
    return registry
