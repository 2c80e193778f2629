"""The exact cache's storage: two JetStream key-value buckets with per-entry TTLs (expiry is the server's job)."""

from __future__ import annotations

import contextlib
from typing import TypeVar

import msgspec
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
    def __init__(self, answers: KeyValue, pending: KeyValue) -> None:
        self._answers = answers
        self._pending = pending

    async def get(self, key: str) -> CachedAnswer | None:
        return await _get(self._answers, key, CachedAnswer)

    async def put(self, key: str, answer: CachedAnswer, *, ttl_s: int, replace: bool = False) -> None:
        """Store ``answer`` unless one is already there (the first answer wins; ``replace`` overrides)."""
        if replace:
            await self._answers.purge(key)
        await _create(self._answers, key, msgspec.json.encode(answer), ttl_s)

    async def expect(self, tenant: str, request_id: str, pending: Pending) -> None:
        await _create(self._pending, _pending_key(tenant, request_id), msgspec.json.encode(pending), None)

    async def take_pending(self, tenant: str, request_id: str) -> Pending | None:
        key = _pending_key(tenant, request_id)
        found = await _get(self._pending, key, Pending)
        if found is not None:
            await self._pending.purge(key)
        return found


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
