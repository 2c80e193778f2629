"""Standard Webhooks signatures (https://www.standardwebhooks.com): ``v1,<base64 HMAC-SHA256(id.ts.body)>``."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping

__all__ = ["Signer", "webhook_id"]


def webhook_id(tenant: str, request_id: str) -> str:
    """The ``webhook-id`` of a request's result: the same on every attempt and every replay, so a receiver
    deduplicates on it."""
    return "msg_" + hashlib.sha256(f"{tenant}\0{request_id}".encode()).hexdigest()[:32]


class Signer:
    """Signs a tenant's webhooks with each of its keys (two during a rotation: the receiver may know either)."""

    def __init__(self, keys: Mapping[str, tuple[bytes, ...]]) -> None:
        self._keys = dict(keys)

    def __repr__(self) -> str:
        return f"Signer(tenants={sorted(self._keys)})"

    def headers(self, tenant: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str] | None:
        """The three Standard Webhooks headers, or None when ``tenant`` has no key."""
        keys = self._keys.get(tenant)
        if not keys:
            return None
        signed = f"{msg_id}.{timestamp}.".encode() + body
        signatures = " ".join(
            "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode() for key in keys
        )
        return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": signatures}
