"""Composition root of the router: the only place it connects to anything."""

from __future__ import annotations

import asyncio
import contextlib
import time

from nats.aio.client import Client
from opentelemetry.trace import TracerProvider

from costwise.budget import open_budgets
from costwise.catalog import Catalog, load_catalog
from costwise.contracts import Clock
from costwise.contracts.subjects import ROUTER_ADVISORIES, ROUTER_COMPLETIONS, ROUTER_ROUTE
from costwise.embed import Embedder
from costwise.messaging import own_connection, provision

from ._capacity import Capacity
from ._learned import GatedVerifier, PromptVectors, SmallTierOdds
from ._service import SERVICE, Router
from .settings import RouterSettings

__all__ = ["Router", "build"]

CONSUMERS = (ROUTER_ROUTE, ROUTER_COMPLETIONS, ROUTER_ADVISORIES)


async def build(
    settings: RouterSettings,
    *,
    nc: Client | None = None,
    catalog: Catalog | None = None,
    embedder: Embedder | None = None,
    tracer_provider: TracerProvider | None = None,
    clock: Clock = time.time,
) -> Router:
    """Load the catalog (and, with more than one tier, the learned router), provision the router's consumers
    and wire its handlers (``start()`` begins pulling). Tests pass a session-wide ``embedder``."""
    catalog = catalog or load_catalog(settings.catalog)
    odds, verifier = None, None
    cascades = len(catalog.tiers) > 1
    if cascades and (settings.learned or settings.response_verifier):
        embedder = embedder or await asyncio.to_thread(Embedder.load, threads=1, backend=settings.embed_backend)
        vectors = PromptVectors(embedder)
        if settings.learned:
            odds = await asyncio.to_thread(SmallTierOdds.load, vectors, settings.route_quality)
        if settings.response_verifier:
            verifier = await asyncio.to_thread(
                GatedVerifier.load,
                vectors,
                direct_below=settings.verifier_direct_below,
                escalate_below=settings.verifier_escalate_below,
            )
    capacity = Capacity([b.name for b in catalog.backends], settings.capacity_refresh_s, burst=settings.affinity_burst)
    async with contextlib.AsyncExitStack() as stack:  # closes what was opened if building fails half-way
        nc = await own_connection(stack, settings.nats_url, nc, name=SERVICE)
        await provision(nc.jetstream(), CONSUMERS)
        budgets = await open_budgets(nc.jetstream())
        owned = stack.pop_all()
    tracer = tracer_provider.get_tracer("costwise.router") if tracer_provider else None
    return Router(
        settings,
        nc,
        catalog,
        budgets,
        capacity,
        clock=clock,
        owned=owned,
        odds=odds,
        verifier=verifier,
        tracer=tracer,
    )
