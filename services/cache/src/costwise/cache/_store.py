"""The exact cache's storage: a JetStream key-value bucket with per-entry TTLs (expiry is the server's job)."""

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
    """Remembered from a miss on: where to store the answer and for how long, then (kept as long as the
    answer) which answer a request id produced."""

    key: str
    ttl_s: int
    replace: bool = False
    """The request asked for a fresh answer (``refresh``): it replaces what is stored."""
    question: str | None = None
    """Set when the answer is also stored for semantic lookups (with the scope and the question's vector)."""
    scope: str | None = None
    vector: bytes | None = None


class ExactStore:
    """Answers under ``<tenant>.<hash>``. Each miss leaves a record under ``<tenant>.r.<request id>`` (its
    :class:`Pending`: where the answer goes) that lives as long as the answer: it tells the result's handler
    where to store, and later lets one answer be forgotten by the request id its caller knows. A tenant's
    answers and records go in one subject purge. Two writes per stored answer, none to clean up."""

    def __init__(self, answers: KeyValue, *, js: JetStreamContext, bucket: str) -> None:
        self._answers = answers
        self._js = js
        self._bucket = bucket

    async def get(self, key: str) -> CachedAnswer | None:
        return await _get(self._answers, key, CachedAnswer)

    async def put(self, key: str, answer: CachedAnswer, *, ttl_s: int, replace: bool = False) -> None:
        """Store ``answer`` unless one is already there (the first answer wins; ``replace`` overrides)."""
        if replace:
            await self._answers.purge(key)
        await _create(self._answers, key, msgspec.json.encode(answer), ttl_s)

    async def expect(self, tenant: str, request_id: str, pending: Pending) -> None:
        """Remember where ``request_id``'s answer goes, for as long as the answer would be kept."""
        await _create(self._answers, _by_request(tenant, request_id), msgspec.json.encode(pending), pending.ttl_s)

    async def pending(self, tenant: str, request_id: str) -> Pending | None:
        """What :meth:`expect` remembered (a redelivered result finds it again: storing is idempotent)."""
        return await _get(self._answers, _by_request(tenant, request_id), Pending)

    async def discard(self, tenant: str, request_id: str) -> None:
        """Drop :meth:`expect`'s record of a request whose answer is not stored."""
        await self._answers.purge(_by_request(tenant, request_id))

    async def forget(self, tenant: str, request_id: str) -> str | None:
        """Delete the answer ``request_id`` produced; returns its key (``None`` if none is stored)."""
        found = await self.pending(tenant, request_id)
        if found is None:
            return None
        answer = await self.get(found.key)
        if answer is not None and answer.request_id == request_id:  # a refresh may have replaced it since
            await self._answers.purge(found.key)
        await self.discard(tenant, request_id)
        return found.key

    async def forget_tenant(self, tenant: str) -> None:
        """Delete every answer of ``tenant`` in one server-side purge of its keys' subjects."""
        await self._js.purge_stream(f"KV_{self._bucket}", subject=f"$KV.{self._bucket}.{tenant}.>")


def _by_request(tenant: str, request_id: str) -> str:
    return f"{tenant}.r.{request_id}"  # both are subject-token safe by contract; answer keys have no "r" token


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
