"""Composition root of billing: the only place it connects to anything."""

from __future__ import annotations

import asyncio
import contextlib
import time
from decimal import Decimal

from nats.aio.client import Client

from costwise.budget import open_budgets
from costwise.catalog import Catalog, load_catalog
from costwise.contracts import Clock
from costwise.contracts.subjects import BILLING_RESULTS, BILLING_USAGE
from costwise.messaging import own_connection, provision

from ._ledger import Ledger, open_ledger
from ._metrics import Rollup
from ._pricing import Pricer
from ._service import SERVICE, Billing
from .settings import BillingSettings

__all__ = ["Billing", "build"]

CONSUMERS = (BILLING_USAGE, BILLING_RESULTS)


def pricer_for(settings: BillingSettings, catalog: Catalog) -> Pricer:
    return Pricer(
        catalog,
        exact_hit_usd=Decimal(settings.exact_hit_usd),
        semantic_hit_usd=Decimal(settings.semantic_hit_usd),
        semantic_lookup_usd=Decimal(settings.semantic_lookup_usd),
        tenants=frozenset(settings.tenants),
        cpu_usd_per_hour=Decimal(settings.cpu_usd_per_hour),
    )


async def build(
    settings: BillingSettings,
    *,
    nc: Client | None = None,
    catalog: Catalog | None = None,
    ledger: Ledger | None = None,
    clock: Clock = time.time,
) -> Billing:
    """Load the catalog, open (and migrate) the ledger, provision billing's consumers and wire its handlers
    (``start()`` begins pulling). An injected ``nc`` or ``ledger`` belongs to the caller: ``stop()`` never
    closes it."""
    catalog = catalog or load_catalog(settings.catalog)  # a bad catalog fails before anything is opened
    async with contextlib.AsyncExitStack() as stack:  # closes what was opened if building fails half-way
        if ledger is None:
            ledger = await asyncio.to_thread(open_ledger, settings.database_url)
            stack.push_async_callback(asyncio.to_thread, ledger.close)
        nc = await own_connection(stack, settings.nats_url, nc, name=SERVICE)
        await provision(nc.jetstream(), CONSUMERS)
        budgets = await open_budgets(nc.jetstream(), clock=clock)
        rollup = await _seeded(ledger) if settings.metrics_port is not None else None
        owned = stack.pop_all()
    pricer = pricer_for(settings, catalog)
    return Billing(settings, nc, ledger, pricer, budgets, clock=clock, rollup=rollup, owned=owned)


async def _seeded(ledger: Ledger) -> Rollup:
    """The metrics' running sums from one full pass over the ledger: later commits move them."""
    rollup = Rollup()
    rollup.add(await asyncio.to_thread(ledger.request_totals))
    return rollup
