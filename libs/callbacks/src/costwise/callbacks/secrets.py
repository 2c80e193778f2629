"""Webhook signing secrets in the ``WEBHOOK_SECRETS`` bucket, one entry per tenant.

A tenant's entry lists its secrets newest first: one normally, two while rotating (Standard Webhooks lets a
call carry a signature per secret, so a receiver that knows either accepts it). The previous secret of a
rotation lives until ``revoke(previous=True)`` or its expiry. Revoking everything leaves an entry with no
secrets rather than none at all: an entry, even an empty one, is the tenant's final word, and only a tenant
with no entry falls back to the webhooks service's ``COSTWISE_WEBHOOKS_SECRETS`` (which would otherwise bring
a revoked secret back).

Every write is compare-and-set, so two operators rotating at once cannot lose a secret. Secrets are stored as
they are (signing needs them) and never appear in a ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import os
import time

import msgspec
from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from costwise.contracts import Clock, now_ms
from costwise.contracts.messages import Token

__all__ = ["SecretStore", "TenantSecrets", "WebhookSecret", "decode_secret", "new_secret"]

MAX_LIVE = 2
PREFIX = "whsec_"


def new_secret() -> str:
    """A fresh ``whsec_<base64 of 32 random bytes>`` signing secret."""
    return PREFIX + base64.b64encode(os.urandom(32)).decode()


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret; ValueError (naming no secret) when malformed."""
    try:
        key = base64.b64decode(secret.removeprefix(PREFIX), validate=True)
    except binascii.Error:
        raise ValueError("a webhook secret must be whsec_<base64>") from None
    if not key:
        raise ValueError("a webhook secret must be whsec_<base64>")
    return key


class WebhookSecret(msgspec.Struct, frozen=True, kw_only=True):
    secret: str
    created_ms: int
    expires_ms: int | None = None
    """When a rotated-out secret stops signing (``None``: until revoked)."""

    def __repr__(self) -> str:
        return f"WebhookSecret(created_ms={self.created_ms}, expires_ms={self.expires_ms})"

    def live(self, at_ms: int) -> bool:
        return self.expires_ms is None or at_ms < self.expires_ms


class TenantSecrets(msgspec.Struct, frozen=True, kw_only=True, tag="webhook_secrets.v1", tag_field="type"):
    """What the bucket holds per tenant (versioned: it outlives deploys)."""

    secrets: tuple[WebhookSecret, ...] = ()
    """Newest first; empty once revoked."""
    updated_ms: int

    def __repr__(self) -> str:
        return f"TenantSecrets(count={len(self.secrets)}, updated_ms={self.updated_ms})"

    def live(self, at_ms: int) -> tuple[str, ...]:
        return tuple(s.secret for s in self.secrets if s.live(at_ms))


class SecretStore:
    """Create, rotate, revoke and read tenants' webhook secrets in the ``WEBHOOK_SECRETS`` bucket."""

    def __init__(self, kv: KeyValue, *, clock: Clock = time.time) -> None:
        self._kv = kv
        self._clock = clock

    async def get(self, tenant: str) -> TenantSecrets | None:
        """The tenant's entry, or ``None`` when it has none (then the webhooks service's env config applies)."""
        entry = await self._entry(tenant)
        return None if entry is None else entry[0]

    async def live(self, tenant: str) -> tuple[str, ...] | None:
        """The tenant's secrets that sign now (newest first); ``None`` when the bucket has no entry for it."""
        record = await self.get(tenant)
        return None if record is None else record.live(now_ms(self._clock))

    async def create(self, tenant: str) -> str:
        """A first secret for ``tenant`` (returned, to hand over once); ValueError if it has a live one."""
        secret = new_secret()

        def first(record: TenantSecrets | None, now: int) -> tuple[WebhookSecret, ...]:
            if record is not None and record.live(now):
                raise ValueError(f"tenant {tenant!r} has a webhook secret already: rotate it instead")
            return (WebhookSecret(secret=secret, created_ms=now),)

        await self._change(tenant, first)
        return secret

    async def rotate(self, tenant: str, *, previous_ttl_s: float | None = None) -> str:
        """Add a new secret (returned); the newest current one keeps signing beside it until
        ``revoke(previous=True)`` or ``previous_ttl_s`` from now. ValueError if there is nothing to rotate."""
        secret = new_secret()

        def rotated(record: TenantSecrets | None, now: int) -> tuple[WebhookSecret, ...]:
            current = [s for s in (record.secrets if record else ()) if s.live(now)]
            if not current:
                raise ValueError(f"tenant {tenant!r} has no webhook secret to rotate: create one")
            previous = current[0]
            if previous_ttl_s is not None:
                expires = now + int(previous_ttl_s * 1000)
                previous = msgspec.structs.replace(previous, expires_ms=min(previous.expires_ms or expires, expires))
            return (WebhookSecret(secret=secret, created_ms=now), previous)[:MAX_LIVE]

        await self._change(tenant, rotated)
        return secret

    async def revoke(self, tenant: str, *, previous: bool = False) -> int:
        """Remove every secret of ``tenant`` (or, with ``previous``, all but the newest); how many were live."""
        removed = 0

        def kept(record: TenantSecrets | None, now: int) -> tuple[WebhookSecret, ...]:
            nonlocal removed
            current = tuple(s for s in (record.secrets if record else ()) if s.live(now))
            keep = current[:1] if previous else ()
            removed = len(current) - len(keep)
            return keep

        await self._change(tenant, kept)
        return removed

    async def seed(self, tenant: str, secrets: list[str] | tuple[str, ...]) -> bool:
        """Store ``secrets`` as ``tenant``'s unless it has an entry already (then False: the bucket wins)."""
        tenant = msgspec.convert(tenant, Token)
        for secret in secrets:
            decode_secret(secret)
        now = now_ms(self._clock)
        record = TenantSecrets(
            secrets=tuple(WebhookSecret(secret=s, created_ms=now) for s in secrets[:MAX_LIVE]), updated_ms=now
        )
        try:
            await self._kv.create(tenant, msgspec.json.encode(record))
        except KeyWrongLastSequenceError:
            return False
        return True

    async def _change(self, tenant: str, change) -> None:  # type: ignore[no-untyped-def]
        tenant = msgspec.convert(tenant, Token)  # a tenant is a bucket key and a subject token: check it here
        while True:
            entry = await self._entry(tenant)
            record, revision = entry if entry else (None, None)
            now = now_ms(self._clock)
            value = msgspec.json.encode(TenantSecrets(secrets=change(record, now), updated_ms=now))
            try:
                if revision is None:
                    await self._kv.create(tenant, value)
                else:
                    await self._kv.update(tenant, value, last=revision)
                return
            except KeyWrongLastSequenceError:
                continue  # someone else changed it meanwhile: apply the change to theirs

    async def _entry(self, tenant: str) -> tuple[TenantSecrets, int] | None:
        try:
            entry = await self._kv.get(tenant)
        except (KeyNotFoundError, KeyDeletedError):
            return None
        if not entry.value:
            return None
        return msgspec.json.decode(entry.value, type=TenantSecrets), int(entry.revision or 0)
