from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

__all__ = ["RouterSettings"]


class RouterSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Router configuration, from ``COSTWISE_ROUTER_*`` environment variables."""

    nats_url: str = "nats://127.0.0.1:4222"
    routes: dict[str, Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]+$")]] = msgspec.field(
        default_factory=lambda: {"auto": "default", "small": "default"}
    )
    """Model or tier name → worker pool. A request for any other model gets ``unknown_pool``."""
    batch: Annotated[int, Meta(ge=1, le=1024)] = 64
    concurrency: Annotated[int, Meta(ge=1, le=1024)] = 16
    """Messages of a pulled batch handled at once (each handler waits for its publish's PubAck)."""
    otlp_endpoint: str | None = None

    def __post_init__(self) -> None:
        if not self.routes:
            raise ValueError("routes must map at least one model to a pool")
