from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

__all__ = ["BillingSettings"]

UsdString = Annotated[str, Meta(pattern=r"^[0-9]+(\.[0-9]+)?$", max_length=32)]


class BillingSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Billing configuration, from ``COSTWISE_BILLING_*`` environment variables."""

    nats_url: str = "nats://127.0.0.1:4222"
    database_url: str = "sqlite:///var/billing/ledger.db"
    """``sqlite:///path`` (embedded, the default) or ``postgresql://user@host/db`` for scale."""
    catalog: str | None = None
    """The catalog TOML every price comes from (``deploy/catalog.example.toml``); the embedded default if unset."""
    tenants: Annotated[list[Annotated[str, Meta(max_length=64)]], Meta(max_length=10_000)] = []
    """Tenants whose events are accepted; empty accepts any. Others are dead-lettered (``unknown_tenant``)."""
    cpu_usd_per_hour: UsdString = "0.05"
    """What one CPU core of the cache costs per hour: a cache hit is billed its measured seconds at this price.
    The default is about an on-demand cloud vCPU (e.g. AWS c7i, ~$0.045/vCPU-h in us-east-1, late 2025)."""
    exact_hit_usd: UsdString = "0"
    """What an exact-cache hit costs when it carries no measurement (a cache older than the measurement)."""
    semantic_hit_usd: UsdString = "0"
    """What a semantic-cache hit costs when it carries no measurement."""
    semantic_lookup_usd: UsdString = "0.000000044"
    """What a semantic lookup that served nothing costs when it carries no measurement (a measured one is billed its
    seconds at ``cpu_usd_per_hour``, like a hit). Default: 2 cores ÷ 629 full lookups/s (docs/benchmarks.md, 100k
    entries, one search thread) = 3.2 ms of CPU per lookup, at the default $0.05 per CPU-hour."""
    batch: Annotated[int, Meta(ge=1, le=1024)] = 256
    """Events pulled and committed in one ledger transaction."""
    metrics_port: Annotated[int, Meta(ge=0, le=65535)] | None = None
    """Serve Prometheus metrics on this port (0 = any free port); none when unset."""
    metrics_host: str = "127.0.0.1"
    """Interface the metrics endpoint listens on (``0.0.0.0`` in a container)."""
