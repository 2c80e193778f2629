from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Annotated

import msgspec
from msgspec import Meta

__all__ = ["Secrets", "WebhooksSettings", "env_secrets", "load_secrets"]

Tenant = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]+$", min_length=1, max_length=64)]
Secret = Annotated[str, Meta(pattern=r"^whsec_[A-Za-z0-9+/]+={0,2}$", max_length=512)]
Secrets = dict[Tenant, Annotated[list[Secret], Meta(min_length=1, max_length=2)]]
Seconds = Annotated[float, Meta(gt=0.0)]


class WebhooksSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Webhooks configuration, from ``COSTWISE_WEBHOOKS_*`` environment variables."""

    nats_url: str = "nats://127.0.0.1:4222"
    secrets: Secrets = {}
    """Tenant → signing secrets (``whsec_<base64>``); two while rotating (both sign every call). A fallback and
    seed: at start they are copied into the ``WEBHOOK_SECRETS`` bucket for tenants that have no entry there, and
    a tenant's bucket entry (``python -m costwise.webhooks secret …``) always wins over them."""
    secrets_file: str | None = None
    """A JSON file holding the same mapping (merged over ``secrets``), so secrets need not sit in the env."""
    secrets_cache_s: Annotated[float, Meta(ge=0.0, le=300.0)] = 5.0
    """How long a tenant's secrets read from the bucket are reused before reading again (0: every call); bounds
    how long a revoked secret may still sign."""
    allow: list[Annotated[str, Meta(max_length=256)]] = []
    """CIDRs (``10.8.0.0/16``) or ``host:port`` pairs a callback may reach although they are not public."""
    connect_timeout_s: Seconds = 5.0
    read_timeout_s: Seconds = 10.0
    attempt_timeout_s: Seconds = 30.0
    """Whole attempt: DNS, connect, send and the response (a slow-dripping receiver cannot hold us longer)."""
    tls_ca_file: str | None = None
    """PEM bundle of extra CAs to trust (receivers behind a private CA), on top of the public ones."""
    max_response_bytes: Annotated[int, Meta(ge=0, le=16 << 20)] = 64 << 10
    retry_initial_s: Seconds = 5.0
    retry_max_s: Seconds = 3600.0
    retry_window_s: Seconds = 24 * 3600.0
    """How long after a result completed its webhook is still retried; then dead letter + webhook_failed."""
    retry_jitter: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.2
    """Each delay is shortened by up to this fraction, at random (spreads retries; never extends the window)."""
    concurrency: Annotated[int, Meta(ge=1, le=4096)] = 64
    """HTTP calls in flight across tenants (each tenant has at most one)."""
    poll_s: Seconds = 5.0
    """How long one pull on a tenant's outbox waits: an idle outbox costs one pull request per ``poll_s``."""
    rescan_s: Seconds = 30.0
    """How often to look for tenant outboxes other instances (or a replay) created."""
    otlp_endpoint: str | None = None

    def __repr__(self) -> str:  # secrets must never reach a log line
        return f"WebhooksSettings(nats_url={self.nats_url!r}, tenants_with_secrets={sorted(self.secrets)}, ...)"

    def __post_init__(self) -> None:
        if self.retry_initial_s > self.retry_max_s:
            raise ValueError("retry_initial_s must not exceed retry_max_s")

    @property
    def ack_wait_s(self) -> float:
        """Longer than any attempt, so JetStream redelivers only a message whose handler died."""
        return self.attempt_timeout_s + 30.0


def load_secrets(settings: WebhooksSettings) -> dict[str, tuple[bytes, ...]]:
    """Tenant → decoded signing keys, from ``secrets`` and ``secrets_file``; raises ValueError naming the tenant."""
    return {tenant: tuple(_key(tenant, s) for s in secrets) for tenant, secrets in env_secrets(settings).items()}


def env_secrets(settings: WebhooksSettings) -> dict[str, list[str]]:
    """Tenant → ``whsec_`` secrets, from ``secrets`` and ``secrets_file`` (merged over them)."""
    merged = dict(settings.secrets)
    if settings.secrets_file:
        try:
            merged |= msgspec.json.decode(Path(settings.secrets_file).read_bytes(), type=Secrets)
        except (OSError, msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise ValueError(f"cannot read secrets_file {settings.secrets_file}: {exc}") from None
    return merged


def _key(tenant: str, secret: str) -> bytes:
    try:
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except binascii.Error:
        raise ValueError(f"webhook secret of tenant {tenant!r} is not whsec_<base64>") from None
