"""The replay's costs, from billing's ledger and billing's own report code, once billing has settled every result."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

import sqlalchemy as sa

from costwise.billing import LEVERS, Ledger, Report, Scope, build_report, open_ledger
from costwise.contracts import Result

from ._drive import Observed

__all__ = ["Costs", "read_costs", "since_of"]

POLL_S = 0.5


def since_of(started_ms: int) -> int:
    """The report's window start: the replay's start, floored to a whole second so ``costwise report --since``
    with the same ISO time reads exactly the same lines."""
    return started_ms - started_ms % 1000


def _expected_attempts(result: Result) -> int:
    """Attempt lines billing will hold for a request: one per attempt that ran a model (a failed call is free)."""
    return sum(1 for a in result.route if a.outcome != "failed")


class Costs:
    """The billing report over exactly this replay's requests, and whether billing had settled all of them."""

    def __init__(self, report: Report, settled: bool, others: int, url: str, since_ms: int) -> None:
        self.report, self.settled, self.others, self.url, self.since_ms = report, settled, others, url, since_ms

    def summary(self) -> dict[str, Any]:
        r = self.report
        since = dt.datetime.fromtimestamp(self.since_ms / 1000, tz=dt.UTC).isoformat()
        return {
            "cost_actual_usd": _usd(r.actual_nusd),
            "cost_baseline_usd": _usd(r.baseline_nusd),
            "cost_reduction": round(1 - r.actual_nusd / r.baseline_nusd, 4) if r.baseline_nusd else None,
            "savings_by_lever": {lever: _usd(r.savings_nusd[lever]) for lever in LEVERS},
            "ledger": {
                "database": _shown(self.url),
                "since": since,
                "report_command": f"costwise report --since {since} --json",
                "settled": self.settled,
                "requests": r.requests,
                "in_flight": r.in_flight,
                "sources": r.sources,
                "actual_nusd": r.actual_nusd,
                "baseline_nusd": r.baseline_nusd,
                "savings_nusd": r.savings_nusd,
                "cache_overhead_nusd": r.cache_overhead_nusd,
                "other_requests_in_window": self.others,
            },
        }


def _usd(nano: int) -> float:
    return round(nano / 1e9, 9)


def _shown(url: str) -> str:
    """The database URL without its password (it may be a PostgreSQL one)."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "(unparseable database URL)"


def _settled(totals: list[Any], observed: Observed) -> bool:
    found = {t.request_id: t for t in totals}
    for rid, result in observed.results.items():
        t = found.get(rid)
        if t is None or t.status is None or t.attempts < _expected_attempts(result):
            return False
    return True


def _read(ledger: Ledger, observed: Observed, scope: Scope) -> list[Any]:
    mine = [(item.tenant, rid) for rid, item in observed.sent.items()]
    return ledger.request_totals(scope, requests=mine) if mine else []


def _wait_and_report(url: str, observed: Observed, since_ms: int, timeout: float) -> Costs:
    """Poll until every result's lines are in and two reads agree (a late overhead line), then build the report."""
    scope = Scope(since_ms=since_ms)
    ledger = open_ledger(url, migrate=False)
    try:
        deadline, last, settled = time.monotonic() + timeout, None, False
        while True:
            totals = _read(ledger, observed, scope)
            settled = _settled(totals, observed) and totals == last
            if settled or time.monotonic() > deadline:
                break
            last = totals
            time.sleep(POLL_S)
        report = build_report(totals, ledger.route_totals(scope), scope, ledger.wrong_hits(scope))
        others = len(ledger.request_totals(scope)) - len(totals)
    finally:
        ledger.close()
    return Costs(report, settled, others, url, since_ms)


async def read_costs(url: str, observed: Observed, *, timeout: float = 120.0) -> Costs:
    """The report once billing settled (or after ``timeout`` seconds; ``settled`` then says it had not)."""
    return await asyncio.to_thread(_wait_and_report, url, observed, since_of(observed.started_ms), timeout)
