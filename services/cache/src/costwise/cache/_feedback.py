"""Wrong-hit feedback: what each semantic hit matched, the pairs a tenant reported wrong, and its similarity floor.

One key-value bucket (``subjects.CACHE_FEEDBACK``), every key starting with its tenant:

- ``<tenant>.hit.<request id>``: the question a semantic hit answered and its scope (:class:`HitNote`), kept as long
  as results are, so a report days later still knows what was asked. Exact hits write none: their question is the
  cached one by definition, and the exact path stays one KV read.
- ``<tenant>.wrong.<request id>``: a reported pair (:class:`WrongPair`).
- ``<tenant>.floor``: the highest similarity among the tenant's reported *semantic* wrong hits (:class:`Floor`);
  the tenant's semantic hits then need a similarity above it (``_policy.above_floor``).

Entries live at most the bucket's 90 days: a tenant's floor is forgotten 90 days after it was last raised.
"""

from __future__ import annotations

import contextlib
from typing import Literal, TypeVar

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from costwise.contracts import Result, decode, subjects

__all__ = ["Feedback", "Floor", "HitNote", "WrongPair", "stored_result"]

_QUESTION_CHARS = 4000  # a record for people and later training, not the whole prompt (values are capped at 64 KiB)
_RESULTS_KEPT_S = int(subjects.RESULTS.max_age_s)
T = TypeVar("T", bound=msgspec.Struct)


class HitNote(msgspec.Struct, frozen=True, kw_only=True, tag="cache_hit_note.v1", tag_field="type"):
    """What a semantic hit was asked (only the cache reads this; versioned all the same, it outlives deploys)."""

    question: str
    scope: str
    """The semantic scope it was looked up in (vector space, model/tier, earlier messages, sampling)."""


class WrongPair(msgspec.Struct, frozen=True, kw_only=True, tag="cache_wrong_pair.v1", tag_field="type"):
    """A hit the tenant reported wrong: the question asked, the cached one that answered it, how close they were."""

    request_id: str
    cached_request_id: str
    kind: Literal["exact", "semantic"]
    similarity: float
    question: str = ""
    """Empty for an exact hit (the same canonical request as the cached one) or when the hit note expired."""
    cached_question: str = ""
    """Empty when the entry was gone from the index before the report (expired, invalidated, displaced)."""
    reason: str = ""
    reported_ms: int = 0


class Floor(msgspec.Struct, frozen=True, kw_only=True, tag="cache_floor.v1", tag_field="type"):
    """A tenant's semantic similarity floor: the highest similarity among its reported semantic wrong hits (a max,
    so a redelivered report raises it to the same value)."""

    similarity: float


class Feedback:
    """The feedback bucket's reads and writes (every one idempotent: a redelivered command repeats them safely)."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def note_hit(self, tenant: str, request_id: str, question: str, scope: str) -> None:
        note = HitNote(question=question[:_QUESTION_CHARS], scope=scope)
        await _create(self._kv, f"{tenant}.hit.{request_id}", msgspec.json.encode(note), _RESULTS_KEPT_S)

    async def hit_note(self, tenant: str, request_id: str) -> HitNote | None:
        return await _get(self._kv, f"{tenant}.hit.{request_id}", HitNote)

    async def floor(self, tenant: str) -> float | None:
        found = await _get(self._kv, f"{tenant}.floor", Floor)
        return None if found is None else found.similarity

    async def record(self, tenant: str, pair: WrongPair) -> None:
        """Keep the pair (the first report of a request wins; a repeat changes nothing)."""
        question, cached_question = pair.question[:_QUESTION_CHARS], pair.cached_question[:_QUESTION_CHARS]
        stored = msgspec.structs.replace(pair, question=question, cached_question=cached_question)
        await _create(self._kv, f"{tenant}.wrong.{pair.request_id}", msgspec.json.encode(stored), None)

    async def raise_floor(self, tenant: str, similarity: float) -> None:
        """Raise the tenant's floor to ``similarity`` unless it is higher already (compare-and-set: several cache
        instances share the control consumer)."""
        key = f"{tenant}.floor"
        while True:
            try:
                entry = await self._kv.get(key)
            except (KeyNotFoundError, KeyDeletedError):
                with contextlib.suppress(KeyWrongLastSequenceError):  # another instance wrote first: read again
                    await self._kv.create(key, msgspec.json.encode(Floor(similarity=similarity)))
                    return
                continue
            now = msgspec.json.decode(entry.value or b"", type=Floor)
            if now.similarity >= similarity:
                return
            with contextlib.suppress(KeyWrongLastSequenceError):
                await self._kv.update(key, msgspec.json.encode(Floor(similarity=similarity)), last=entry.revision)
                return


async def stored_result(js: JetStreamContext, tenant: str, request_id: str) -> Result | None:
    """The result ``request_id`` got (the last one stored on its subject), ``None`` if it has none (yet, or any more)."""
    try:
        msg = await js.get_last_msg(subjects.RESULTS.name, subjects.results(tenant, request_id))
    except NotFoundError:
        return None
    return decode(msg.data or b"", Result)


async def _get(kv: KeyValue, key: str, kind: type[T]) -> T | None:
    try:
        entry = await kv.get(key)
    except (KeyNotFoundError, KeyDeletedError):
        return None
    return None if entry.value is None else msgspec.json.decode(entry.value, type=kind)


async def _create(kv: KeyValue, key: str, value: bytes, ttl_s: int | None) -> None:
    with contextlib.suppress(KeyWrongLastSequenceError):  # already there: a redelivery, or the first report won
        await kv.create(key, value, msg_ttl=ttl_s)
