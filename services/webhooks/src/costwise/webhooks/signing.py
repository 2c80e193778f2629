"""Standard Webhooks signatures (https://www.standardwebhooks.com): ``v1,<base64 HMAC-SHA256(id.ts.body)>``.

A tenant's secrets come from the ``WEBHOOK_SECRETS`` bucket (``python -m costwise.webhooks secret …``), read
when signing and cached for ``secrets_cache_s``; a tenant with no entry there falls back to the service's
``COSTWISE_WEBHOOKS_SECRETS`` / ``secrets_file`` (which :meth:`Signer.seed` copies into the bucket at start).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Mapping

from costwise.callbacks import SecretStore, decode_secret

__all__ = ["Signer", "webhook_id"]

log = logging.getLogger("costwise.webhooks")


def webhook_id(tenant: str, request_id: str) -> str:
    """The ``webhook-id`` of a request's result: the same on every attempt and every replay, so a receiver
    deduplicates on it."""
    return "msg_" + hashlib.sha256(f"{tenant}\0{request_id}".encode()).hexdigest()[:32]


class Signer:
    """Signs a tenant's webhooks with each of its live keys (two during a rotation: the receiver may know either).

    The bucket's entry for a tenant, when there is one (even an empty, revoked one), wins over the env keys.
    """

    def __init__(
        self,
        keys: Mapping[str, tuple[bytes, ...]],
        store: SecretStore | None = None,
        *,
        cache_s: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keys = dict(keys)
        self._store = store
        self._cache_s = cache_s
        self._monotonic = monotonic
        self._cache: dict[str, tuple[float, tuple[bytes, ...]]] = {}

    def __repr__(self) -> str:
        return f"Signer(env_tenants={sorted(self._keys)}, bucket={self._store is not None})"

    async def keys(self, tenant: str) -> tuple[bytes, ...]:
        """``tenant``'s live signing keys (bucket first, then env), cached briefly."""
        if self._store is None:
            return self._keys.get(tenant, ())
        now = self._monotonic()
        cached = self._cache.get(tenant)
        if cached is not None and now - cached[0] < self._cache_s:
            return cached[1]
        try:
            live = await self._store.live(tenant)
        except Exception:
            if cached is None:
                raise  # the delivery fails and is retried: never sent unsigned, never with a guess
            log.warning("reading the webhook secrets of tenant %s failed; signing with the last ones read", tenant)
            return cached[1]
        keys = self._keys.get(tenant, ()) if live is None else tuple(decode_secret(s) for s in live)
        self._cache[tenant] = (now, keys)
        return keys

    async def seed(self, secrets: Mapping[str, list[str]]) -> None:
        """Copy env secrets into the bucket for tenants that have no entry there (the gateway reads only the
        bucket); a tenant with an entry keeps it, and its env secrets are ignored (logged, never the secrets)."""
        if self._store is None:
            return
        for tenant, values in secrets.items():
            if not await self._store.seed(tenant, values):
                stored = await self._store.live(tenant) or ()
                if set(stored) != set(values):
                    log.warning(
                        "env webhook secrets of tenant %s ignored: the secrets bucket has its own for it "
                        "(manage them with `python -m costwise.webhooks secret`)",
                        tenant,
                    )

    async def headers(self, tenant: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str] | None:
        """The three Standard Webhooks headers, or None when ``tenant`` has no live key."""
        keys = await self.keys(tenant)
        if not keys:
            return None
        signed = f"{msg_id}.{timestamp}.".encode() + body
        signatures = " ".join(
            "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode() for key in keys
        )
        return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": signatures}
