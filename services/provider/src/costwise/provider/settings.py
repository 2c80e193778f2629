from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from costwise.settings import process_id

__all__ = ["ProviderSettings"]


class ProviderSettings(msgspec.Struct, frozen=True, kw_only=True):
    """One provider worker, from ``COSTWISE_PROVIDER_*`` environment variables."""

    nats_url: str = "nats://127.0.0.1:4222"
    catalog: str | None = None
    """The catalog file (the same one the router reads)."""
    backend: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]+$", max_length=64)]
    """Name of the ``provider`` backend in the catalog this worker serves (it pulls ``jobs.<backend>``)."""
    ack_wait_s: Annotated[float, Meta(ge=1)] = 30.0
    heartbeat_s: Annotated[float, Meta(gt=0)] = 5.0
    max_deliver: Annotated[int, Meta(ge=1)] = 5
    grace_s: Annotated[float, Meta(ge=0)] = 5.0
    """On SIGTERM, how long calls in flight may finish before their jobs go back to the queue for another worker."""
    max_response_bytes: Annotated[int, Meta(ge=1024)] = 4 << 20
    worker_id: str = msgspec.field(default_factory=process_id)
    otlp_endpoint: str | None = None

    def __post_init__(self) -> None:
        if self.heartbeat_s >= self.ack_wait_s:
            raise ValueError(f"heartbeat_s ({self.heartbeat_s}) must be below ack_wait_s ({self.ack_wait_s})")
