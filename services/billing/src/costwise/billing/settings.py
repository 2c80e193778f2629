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
    exact_hit_usd: UsdString = "0"
    """What serving one exact-cache hit costs (a KV read: effectively nothing)."""
    semantic_hit_usd: UsdString = "0"
    """What serving one semantic-cache hit costs (one embedding, one index query, one verifier pass)."""
    batch: Annotated[int, Meta(ge=1, le=1024)] = 256
    """Events pulled and committed in one ledger transaction."""
    metrics_port: Annotated[int, Meta(ge=0, le=65535)] | None = None
    """Serve Prometheus metrics on this port (0 = any free port); none when unset."""
    metrics_host: str = "127.0.0.1"
    """Interface the metrics endpoint listens on (``0.0.0.0`` in a container)."""
