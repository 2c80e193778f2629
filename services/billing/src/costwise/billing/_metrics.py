"""Prometheus metrics computed from the ledger at scrape time: a redelivered event can never count twice."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ._ledger import Ledger
from ._report import Report, ledger_report, usd

__all__ = ["LedgerCollector", "registry_for"]


class LedgerCollector(Collector):
    """Spend per tenant, cost per query and savings per lever, per tenant, straight from the books."""

    def __init__(self, report: Callable[[str | None], Report], tenants: Callable[[], list[str]]) -> None:
        self.report = report
        self.tenants = tenants

    def collect(self) -> Iterator[GaugeMetricFamily]:
        spend = GaugeMetricFamily("costwise_billing_spend_usd", "Spend recorded in the ledger", labels=["tenant"])
        per_query = GaugeMetricFamily(
            "costwise_billing_cost_per_query_usd", "Actual cost per finished request", labels=["tenant"]
        )
        savings = GaugeMetricFamily(
            "costwise_billing_savings_usd", "Saved against the no-lever baseline", labels=["tenant", "lever"]
        )
        for tenant in self.tenants():
            report = self.report(tenant)
            spend.add_metric([tenant], float(usd(report.actual_nusd)))
            per_query.add_metric([tenant], float(usd(report.cost_per_query_nusd)))
            for lever, amount in report.savings_nusd.items():
                savings.add_metric([tenant, lever], float(usd(amount)))
        yield from (spend, per_query, savings)


def registry_for(ledger: Ledger) -> CollectorRegistry:
    """A registry of its own (no process-global state) exposing ``ledger``'s metrics."""
    registry = CollectorRegistry()

    def report(tenant: str | None) -> Report:
        return ledger_report(ledger, tenant=tenant)

    registry.register(LedgerCollector(report, ledger.tenants))
    return registry
