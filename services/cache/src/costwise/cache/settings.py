from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

__all__ = ["CacheSettings"]

_30_DAYS = 30 * 24 * 3600


class CacheSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Cache configuration, from ``COSTWISE_CACHE_*`` environment variables."""

    nats_url: str = "nats://127.0.0.1:4222"
    ttl_s: Annotated[int, Meta(ge=1, le=_30_DAYS)] = 7 * 24 * 3600
    """How long an answer stays when the request's cache policy names no TTL (the bucket keeps ≤ 30 days)."""
    batch: Annotated[int, Meta(ge=1, le=1024)] = 64
    concurrency: Annotated[int, Meta(ge=1, le=1024)] = 16
    otlp_endpoint: str | None = None
