"""Messages beside the request path: dead letters, failed webhooks, JetStream's max-deliveries advisory and the
cache's control commands. Re-exported by :mod:`costwise.contracts.messages`, whose rules they follow."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from ._base import EpochMs, NonNegInt, RequestId, Token, Url
from ._base import Wire as _Wire
from .errors import ErrorCode

__all__ = ["CacheInvalidation", "CacheWrongHit", "DeadLetter", "MaxDeliveriesAdvisory", "WebhookFailed"]


class DeadLetter(_Wire, frozen=True, kw_only=True, tag="dead_letter.v1"):
    """A message a service gave up on, with why; the raw payload is kept for replay."""

    service: str
    subject: str
    code: ErrorCode
    reason: str
    payload: bytes
    num_delivered: NonNegInt = 0
    stream_seq: NonNegInt | None = None
    request_id: str | None = None
    tenant: str | None = None
    ts_ms: EpochMs = 0


class WebhookFailed(_Wire, frozen=True, kw_only=True, tag="webhook_failed.v1"):
    """A result that did not reach its callback URL (``subjects.webhook_failed(tenant)``).

    The result itself is in the webhooks dead letter (``subjects.webhook_dead_letters(tenant)``), from
    which ``python -m costwise.webhooks replay`` re-sends it.
    """

    tenant: Token
    request_id: RequestId
    webhook_id: Annotated[str, Meta(max_length=128)]
    """The ``webhook-id`` every attempt carried (stable per result, for the receiver's deduplication)."""
    callback_url: Url
    code: ErrorCode
    reason: Annotated[str, Meta(max_length=2000)]
    attempts: NonNegInt = 0
    last_status: Annotated[int, Meta(ge=100, le=599)] | None = None
    """HTTP status of the last attempt (none when it got no response)."""
    ts_ms: EpochMs = 0


class MaxDeliveriesAdvisory(msgspec.Struct, frozen=True, kw_only=True):
    """JetStream's ``io.nats.jetstream.advisory.v1.max_deliver`` event (NATS's format, not ours)."""

    type: str
    stream: str
    consumer: str
    stream_seq: NonNegInt
    deliveries: NonNegInt


class CacheInvalidation(_Wire, frozen=True, kw_only=True, tag="cache_invalidation.v1"):
    """Forget cached answers (``subjects.cache_control(tenant)``): one request's, or all of a tenant's.

    Applies to the exact and the semantic cache alike; answers stored after it are cached as usual.
    """

    tenant: Token
    cached_request_id: RequestId | None = None
    """The request whose answer to forget (as in :attr:`CacheHit.cached_request_id`); ``None`` forgets
    every answer of ``tenant``."""
    reason: Annotated[str, Meta(max_length=256)] = ""


class CacheWrongHit(_Wire, frozen=True, kw_only=True, tag="cache_wrong_hit.v1"):
    """A cache hit served a wrong answer (``subjects.cache_control(tenant)``, beside :class:`CacheInvalidation`).

    The cache forgets the entry that served ``request_id`` (its result's :attr:`CacheHit.cached_request_id`),
    records the pair for ``tenant`` and, for a semantic hit, raises that tenant's similarity floor above it.
    A request that was no cache hit, or is unknown, is refused.
    """

    tenant: Token
    request_id: RequestId
    """The request the wrong hit answered (not the cached one)."""
    reason: Annotated[str, Meta(max_length=256)] = ""
