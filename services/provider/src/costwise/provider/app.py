"""Composition root of the provider worker: the only place it reads the catalog, the API key or connects."""

from __future__ import annotations

import contextlib
import os
import time

import httpx
from nats.aio.client import Client
from opentelemetry.trace import NoOpTracerProvider, TracerProvider

from costwise.catalog import Catalog, CatalogError, Provider, load_catalog
from costwise.contracts import Clock
from costwise.messaging import own_connection, provision

from ._service import ProviderWorker, jobs_queue
from .settings import ProviderSettings

__all__ = ["ProviderWorker", "build"]


async def build(
    settings: ProviderSettings,
    *,
    nc: Client | None = None,
    catalog: Catalog | None = None,
    http: httpx.AsyncClient | None = None,
    tracer_provider: TracerProvider | None = None,
    clock: Clock = time.time,
) -> ProviderWorker:
    """Find this worker's provider in the catalog, connect (unless given ``nc``), provision its backend's queue
    and make the HTTP client (unless given one, which the worker then never closes). ``start()`` begins pulling."""
    provider = _provider(catalog or load_catalog(settings.catalog), settings.backend)
    async with contextlib.AsyncExitStack() as stack:  # closes what was opened if building fails half-way
        nc = await own_connection(stack, settings.nats_url, nc, name=f"provider-{settings.worker_id}")
        await provision(nc.jetstream(), [jobs_queue(settings, provider)])
        if http is None:
            # No redirects: a provider that redirects is misconfigured, and following one could leak the API key.
            # No httpx timeouts: each try is bounded as a whole by the provider's timeout_s (and the request's
            # deadline). httpx's own default, 5 s per read, failed every answer that took longer to write whole
            # (GPT-4 needs ~20 s for 500 tokens), and a per-read timeout equal to the try's only races it.
            limits = httpx.Limits(max_connections=provider.concurrency)
            http = httpx.AsyncClient(follow_redirects=False, limits=limits, timeout=None)
            stack.push_async_callback(http.aclose)
        owned = stack.pop_all()
    # Read once: the key lives in the environment, never in config, logs or messages.
    api_key = os.environ.get(provider.api_key_env) if provider.api_key_env else None
    # A tracer even when nothing is recorded: its spans still carry the publisher's context on to the completion.
    tracer = (tracer_provider or NoOpTracerProvider()).get_tracer("costwise.provider")
    return ProviderWorker(settings, nc, provider, http, api_key=api_key, clock=clock, tracer=tracer, owned=owned)


def _provider(catalog: Catalog, backend: str) -> Provider:
    try:
        found = catalog.backend(backend)
    except KeyError:
        raise CatalogError(f"backend {backend!r} is not in the catalog") from None
    if not isinstance(found, Provider):
        raise CatalogError(f"backend {backend!r} is a worker pool, not a provider: run a GPU worker for it")
    return found
