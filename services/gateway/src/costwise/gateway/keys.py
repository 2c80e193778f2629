"""API keys: each bound to one tenant, stored as a SHA-256 digest (the key itself is shown once, at creation).

A key is ``cw-<key id>-<secret>``: the id (public, 16 hex digits) finds the record, the secret (256 random
bits) is what the digest protects. With that much entropy a plain SHA-256 cannot be brute-forced, so a
lookup costs one hash, not a deliberately slow KDF on every request; and no round trip once the store follows
the bucket (:meth:`KeyStore.follow`, as the gateway's does): the records are then in memory, kept current by a
watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import time

import msgspec
from nats.js.errors import KeyDeletedError, KeyNotFoundError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from costwise.contracts import Clock, now_ms
from costwise.contracts.messages import Token

__all__ = ["ApiKey", "Caller", "KeyRecord", "KeyStore"]

log = logging.getLogger("costwise.gateway")

PREFIX = "cw"
MAX_KEY_CHARS = 128


class KeyRecord(msgspec.Struct, frozen=True, kw_only=True, tag="gateway_api_key.v1", tag_field="type"):
    """What the key bucket holds per key id (only the gateway reads it; versioned as it outlives deploys)."""

    tenant: str
    sha256: str
    created_ms: int
    label: str = ""


class ApiKey(msgspec.Struct, frozen=True, kw_only=True):
    key_id: str
    tenant: str
    secret: str
    """The full key, to hand to the tenant; it is not stored anywhere."""


class Caller(msgspec.Struct, frozen=True, kw_only=True):
    """Who an authenticated request comes from: the key's tenant and the key's public id (never its secret)."""

    tenant: str
    key_id: str


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _key_id(presented: str) -> str | None:
    prefix, _, rest = presented.partition("-")
    key_id, _, secret = rest.partition("-")
    if prefix != PREFIX or len(key_id) != 16 or not secret or len(presented) > MAX_KEY_CHARS:
        return None
    return key_id if all(c in "0123456789abcdef" for c in key_id) else None


class KeyStore:
    """Create, revoke and resolve API keys in the ``GATEWAY_KEYS`` bucket."""

    def __init__(self, kv: KeyValue, *, clock: Clock = time.time) -> None:
        self._kv = kv
        self._clock = clock
        self._known: dict[str, KeyRecord] | None = None
        """Every record, while :meth:`follow`'s watch keeps them current; ``None``: each lookup reads the bucket."""
        self._watch: asyncio.Task[None] | None = None

    async def follow(self) -> KeyStore:
        """Hold every key record in memory and keep it current with the bucket, so a lookup makes no round trip;
        returns once the records there now are loaded. A key revoked elsewhere stops working when its purge
        reaches the watch (milliseconds); a key created elsewhere is read from the bucket until it does. If the
        watch fails, lookups read the bucket again: a copy that stopped following is never trusted."""
        watcher = await self._kv.watchall()
        known: dict[str, KeyRecord] = {}
        while (entry := await watcher.updates(timeout=30)) is not None:  # None marks the end of what is there now
            _apply(known, entry)
        self._known = known
        self._watch = asyncio.create_task(self._keep(watcher, known))
        return self

    @property
    def following(self) -> bool:
        """Whether lookups are served from memory (:meth:`follow` was called and its watch is alive)."""
        return self._known is not None

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch

    async def _keep(self, watcher: KeyValue.KeyWatcher, known: dict[str, KeyRecord]) -> None:
        try:
            async for entry in watcher:
                if entry is not None:
                    _apply(known, entry)
        except Exception as exc:  # e.g. the ordered consumer could not be recreated: fall back, keep serving
            log.warning("the API key watch stopped (%s): keys are read from the bucket", type(exc).__name__)
        finally:
            self._known = None
            with contextlib.suppress(Exception):
                await watcher.stop()

    async def create(self, tenant: str, *, label: str = "") -> ApiKey:
        tenant = msgspec.convert(tenant, Token)  # a tenant becomes a subject token: check it here
        key_id = secrets.token_hex(8)
        secret = f"{PREFIX}-{key_id}-{secrets.token_urlsafe(32)}"
        record = KeyRecord(tenant=tenant, sha256=_digest(secret), created_ms=now_ms(self._clock), label=label)
        await self._kv.create(key_id, msgspec.json.encode(record))
        return ApiKey(key_id=key_id, tenant=tenant, secret=secret)

    async def revoke(self, key_id: str) -> bool:
        """Forget ``key_id``; False if there was no such key."""
        if await self._record(key_id) is None:
            return False
        await self._kv.purge(key_id)
        if self._known is not None:  # this process stops accepting it now, not when its own purge comes back
            self._known.pop(key_id, None)
        return True

    async def resolve(self, presented: str) -> Caller | None:
        """Whose key ``presented`` is, or None for a malformed, unknown or revoked key."""
        key_id = _key_id(presented)
        record = None if key_id is None else (self._known or {}).get(key_id) or await self._record(key_id)
        if key_id is None or record is None or not hmac.compare_digest(record.sha256, _digest(presented)):
            return None
        return Caller(tenant=record.tenant, key_id=key_id)

    async def tenant_of(self, presented: str) -> str | None:
        """The tenant ``presented`` belongs to, or None for a malformed, unknown or revoked key."""
        caller = await self.resolve(presented)
        return None if caller is None else caller.tenant

    async def _record(self, key_id: str) -> KeyRecord | None:
        try:
            entry = await self._kv.get(key_id)
        except (KeyNotFoundError, KeyDeletedError):
            return None
        return None if entry.value is None else msgspec.json.decode(entry.value, type=KeyRecord)


def _apply(known: dict[str, KeyRecord], entry: KeyValue.Entry) -> None:
    """One watched change: a record created (or rewritten), or a key revoked."""
    if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
        known.pop(entry.key, None)
        return
    try:
        known[entry.key] = msgspec.json.decode(entry.value, type=KeyRecord)
    except msgspec.DecodeError:  # not ours to fix here; a lookup of that key reads (and refuses) it
        known.pop(entry.key, None)
