"""The exact cache's storage: two JetStream key-value buckets with per-entry TTLs (expiry is the server's job)."""

from __future__ import annotations

import contextlib
from typing import TypeVar

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from costwise.contracts import Output, Usage

__all__ = ["CachedAnswer", "ExactStore", "Pending"]

T = TypeVar("T", bound=msgspec.Struct)


class CachedAnswer(msgspec.Struct, frozen=True, kw_only=True, tag="cached_answer.v1", tag_field="type"):
    """An answer as the cache keeps it (only the cache reads this; versioned all the same, it outlives deploys)."""

    request_id: str
    output: Output
    model: str | None
    usage: Usage
    """What producing the answer cost: what each hit saves."""
    stored_ms: int


class Pending(msgspec.Struct, frozen=True, kw_only=True, tag="cache_pending.v1", tag_field="type"):
    """Remembered between a miss and its result: where to store the answer, and for how long."""

    key: str
    ttl_s: int
    replace: bool = False
    """The request asked for a fresh answer (``refresh``): it replaces what is stored."""
    question: str | None = None
    """Set when the answer is also stored for semantic lookups (with the scope and the question's vector)."""
    scope: str | None = None
    vector: bytes | None = None


class ExactStore:
    """Answers under ``<tenant>.<hash>``, each with an index entry ``<tenant>.r.<request id>`` → its key, so
    one answer can be forgotten by the request id its caller knows, and a tenant's by one subject purge."""

    def __init__(self, answers: KeyValue, pending: KeyValue, *, js: JetStreamContext, bucket: str) -> None:
        self._answers = answers
        self._pending = pending
        self._js = js
        self._bucket = bucket

    async def get(self, key: str) -> CachedAnswer | None:
        return await _get(self._answers, key, CachedAnswer)

    async def put(self, key: str, answer: CachedAnswer, *, ttl_s: int, replace: bool = False) -> None:
        """Store ``answer`` unless one is already there (the first answer wins; ``replace`` overrides)."""
        if replace:
            await self._answers.purge(key)
        await _create(self._answers, key, msgspec.json.encode(answer), ttl_s)
        await _create(self._answers, _by_request(key, answer.request_id), key.encode(), ttl_s)

    async def forget(self, tenant: str, request_id: str) -> str | None:
        """Delete the answer ``request_id`` produced; returns its key (``None`` if none is stored)."""
        index = f"{tenant}.r.{request_id}"
        try:
            entry = await self._answers.get(index)
        except (KeyNotFoundError, KeyDeletedError):
            return None
        key = (entry.value or b"").decode()
        answer = await self.get(key) if key else None
        if answer is not None and answer.request_id == request_id:  # a refresh may have replaced it since
            await self._answers.purge(key)
        await self._answers.purge(index)
        return key or None

    async def forget_tenant(self, tenant: str) -> None:
        """Delete every answer of ``tenant`` in one server-side purge of its keys' subjects."""
        await self._js.purge_stream(f"KV_{self._bucket}", subject=f"$KV.{self._bucket}.{tenant}.>")

    async def expect(self, tenant: str, request_id: str, pending: Pending) -> None:
        await _create(self._pending, _pending_key(tenant, request_id), msgspec.json.encode(pending), None)

    async def take_pending(self, tenant: str, request_id: str) -> Pending | None:
        key = _pending_key(tenant, request_id)
        found = await _get(self._pending, key, Pending)
        if found is not None:
            await self._pending.purge(key)
        return found


def _by_request(key: str, request_id: str) -> str:
    tenant = key.split(".", 1)[0]  # answer keys start with their tenant (keys.exact_key)
    return f"{tenant}.r.{request_id}"


def _pending_key(tenant: str, request_id: str) -> str:
    return f"{tenant}.{request_id}"  # both are subject-token safe by contract


async def _get(kv: KeyValue, key: str, kind: type[T]) -> T | None:
    try:
        entry = await kv.get(key)
    except (KeyNotFoundError, KeyDeletedError):  # never stored, deleted, or expired
        return None
    return None if entry.value is None else msgspec.json.decode(entry.value, type=kind)


async def _create(kv: KeyValue, key: str, value: bytes, ttl_s: int | None) -> None:
    # Already there: a redelivered message, or another instance stored the same answer first.
    with contextlib.suppress(KeyWrongLastSequenceError):
        await kv.create(key, value, msg_ttl=ttl_s)
