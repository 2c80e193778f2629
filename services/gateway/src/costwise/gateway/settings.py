from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated

import msgspec
from msgspec import Meta

from costwise.settings import load

__all__ = ["GatewaySettings", "load_settings"]

PREFIX = "COSTWISE_GATEWAY_"
ALLOW = f"{PREFIX}CALLBACK_ALLOW"
WEBHOOKS_ALLOW = "COSTWISE_WEBHOOKS_ALLOW"


class GatewaySettings(msgspec.Struct, frozen=True, kw_only=True):
    """Gateway configuration, from ``COSTWISE_GATEWAY_*`` environment variables."""

    nats_url: str = "nats://127.0.0.1:4222"
    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535)] = 8080
    max_header_bytes: Annotated[int, Meta(ge=1024, le=1 << 20)] = 16 << 10
    """Largest request head (request line + headers) uvicorn reads before refusing the request."""
    max_concurrency: Annotated[int, Meta(ge=1, le=100_000)] = 2048
    """Connections/requests served at once; beyond it uvicorn answers 503 instead of queueing without bound."""
    max_body_bytes: Annotated[int, Meta(ge=1024, le=1 << 20)] = 512 << 10
    """Largest request body read; bigger ones get 413 before any parsing (the queue takes ≤ 1 MiB)."""
    default_timeout_s: Annotated[float, Meta(gt=0, le=3600)] = 60.0
    """How long a sync call waits when the client names no timeout (``x-stainless-read-timeout``)."""
    max_timeout_s: Annotated[float, Meta(gt=0, le=3600)] = 600.0
    timeout_margin_s: Annotated[float, Meta(ge=0, le=60)] = 0.5
    """Answer 504 this long before the client's own timeout fires, so it gets a clear error, not a reset."""
    catalog: str | None = None
    """Catalog (tiers, prices) whose baseline price estimates a request's worst-case cost for budget admission."""
    callback_allow: list[Annotated[str, Meta(max_length=256)]] = []
    """CIDRs or ``host:port`` pairs a ``callback_url`` may name although they are not public: the same
    SSRF policy (and, normally, the same list) as the webhooks service's ``COSTWISE_WEBHOOKS_ALLOW``, applied
    at submission so a URL the webhooks service would refuse gets a 400 now, not a failed delivery later."""
    callback_resolve_timeout_s: Annotated[float, Meta(gt=0, le=30)] = 2.0
    """How long resolving a callback URL's host at submission may take before the request is refused."""
    otlp_endpoint: str | None = None

    def __post_init__(self) -> None:
        if self.default_timeout_s > self.max_timeout_s:
            raise ValueError("default_timeout_s must not exceed max_timeout_s")


def load_settings(env: Mapping[str, str] | None = None) -> GatewaySettings:
    """``COSTWISE_GATEWAY_*``; without ``COSTWISE_GATEWAY_CALLBACK_ALLOW``, the callback allow-list is the webhooks
    service's ``COSTWISE_WEBHOOKS_ALLOW`` (when the two share an environment), so both apply the same policy."""
    env = os.environ if env is None else env
    if ALLOW not in env and WEBHOOKS_ALLOW in env:
        env = {**env, ALLOW: env[WEBHOOKS_ALLOW]}
    return load(GatewaySettings, PREFIX, env)
