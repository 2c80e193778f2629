"""The shapes of the names ``subjects`` defines: a stream, a key-value bucket, a durable consumer."""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ["ConsumerSpec", "KeyValueSpec", "StreamSpec"]


class StreamSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A JetStream stream costwise provisions (idempotently) at start."""

    name: str
    subjects: tuple[str, ...]
    retention: Literal["limits", "workqueue", "interest"] = "limits"
    max_age_s: float = 7 * 24 * 3600
    duplicate_window_s: float = 600
    max_msg_size: int = 1 << 20


class KeyValueSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A JetStream key-value bucket costwise provisions at start (entries may carry their own TTL)."""

    bucket: str
    max_age_s: float
    """Upper bound on any entry's life; per-entry TTLs are shorter."""
    max_value_size: int = 1 << 20
    max_bytes: int = -1
    direct_reads: bool = False
    """Reads go to the server's direct-get API (any replica answers, raw message back: about a quarter less CPU
    per read on both sides than the JSON API), at the price of read-after-write: on a cluster a replica a few
    milliseconds behind may answer. Only for buckets where a stale read is a harmless miss."""


class ConsumerSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A durable pull consumer: every instance of a service shares it, so work is spread."""

    durable: str
    stream: str
    filter_subject: str
    ack_wait_s: float = 30.0
    max_deliver: int = 5
    max_ack_pending: int = 1000
    inactive_threshold_s: float | None = None
    """The server deletes the consumer after this long with no pull request and nothing in flight."""
