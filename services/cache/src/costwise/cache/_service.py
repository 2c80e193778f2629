"""The cache's handlers: a request is answered from the store or forwarded to the router; a result is stored."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import msgspec
from nats.aio.client import Client
from opentelemetry.trace import Tracer

from costwise.contracts import (
    CacheHit,
    CacheInvalidation,
    CacheWrongHit,
    Clock,
    ErrorCode,
    InferenceRequest,
    Result,
    UsageEvent,
    now_ms,
    subjects,
)
from costwise.contracts.subjects import CACHE_CONTROL, CACHE_REQUESTS, CACHE_RESULTS
from costwise.messaging import Consumer, ack_current, current_message, forward_current, give_up, publish
from costwise.telemetry import record_result

from ._feedback import Feedback, HitNote, WrongPair, stored_result
from ._policy import (
    Plan,
    above_floor,
    answer_of,
    hit_result,
    lookup_usage,
    pending_for,
    plan,
    storable,
    wrong_hit_usage,
)
from ._semantic import Probe, SemanticCache, explain, vector_from
from ._store import CachedAnswer, ExactStore
from .keys import exact_key
from .settings import CacheSettings

__all__ = ["SERVICE", "Cache"]

log = logging.getLogger("costwise.cache")
SERVICE = "cache"
Hit = tuple[CachedAnswer, CacheHit]


class Cache:
    """Answers repeated requests from the store and forwards the rest to the router; learns from results."""

    def __init__(
        self,
        settings: CacheSettings,
        nc: Client,
        store: ExactStore,
        semantic: SemanticCache | None,
        *,
        feedback: Feedback,
        clock: Clock,
        tracer: Tracer | None,
        owned: contextlib.AsyncExitStack,
    ) -> None:
        self.settings = settings
        self.nc = nc
        self.js = nc.jetstream()
        self.store = store
        self.semantic = semantic
        self.feedback = feedback
        self.clock = clock
        self._owned = owned
        """What ``build`` opened; ``start`` adds what it starts, so ``stop`` closes it all in reverse."""
        self.consumers = [
            Consumer(spec, handler, service=SERVICE, concurrency=concurrency, tracer=tracer)
            for spec, handler, concurrency in (
                (CACHE_REQUESTS, self.on_request, settings.concurrency),
                (CACHE_RESULTS, self.on_result, settings.concurrency),
                (CACHE_CONTROL, self.on_control, 1),
            )
        ]

    async def on_request(self, req: InferenceRequest) -> None:
        todo, key = plan(req), exact_key(req)
        started = time.perf_counter()
        hit = await self._exact(key) if todo.look_up else None
        exact_s = time.perf_counter() - started  # a KV read: its wall time is what it took
        probe = await self.semantic.probe(req) if hit is None and self.semantic and todo.semantic else None
        lookup_s = None
        if probe is not None and todo.look_up:
            searched = time.perf_counter()
            hit = await self._similar(req, probe)
            lookup_s = probe.embed_s + time.perf_counter() - searched  # as a hit's compute_s: embedding CPU + wall
        if hit is not None:
            answer, found = hit
            found = msgspec.structs.replace(found, compute_s=exact_s + found.compute_s)
            await self._answer(req, answer, found, probe)
        else:
            await self._forward(req, todo, key, probe, lookup_s)
        await ack_current()

    async def _exact(self, key: str) -> Hit | None:
        answer = await self.store.get(key)
        return (
            None
            if answer is None
            else (answer, CacheHit(kind="exact", cached_request_id=answer.request_id, saved=answer.usage))
        )

    async def _similar(self, req: InferenceRequest, probe: Probe) -> Hit | None:
        assert self.semantic is not None, "a probe comes from the semantic cache"
        found = await self.semantic.lookup(req, probe, now_ms=now_ms(self.clock))
        if found is None:
            return None
        answer = found.answer
        if not above_floor(found.similarity, await self.feedback.floor(req.tenant)):
            # Not above the highest similarity this tenant reported a wrong hit at: a miss, explained as such.
            explain("tenant_floor", candidate=answer.request_id, similarity=found.similarity, refused_by="tenant_floor")
            return None
        hit = CacheHit(
            kind="semantic",
            cached_request_id=answer.request_id,
            similarity=found.similarity,
            saved=answer.usage,
            compute_s=found.compute_s,
        )
        return answer, hit

    async def _answer(self, req: InferenceRequest, answer: CachedAnswer, hit: CacheHit, probe: Probe | None) -> None:
        result = hit_result(req, answer, hit, now_ms(self.clock))
        record_result(result, requested_model=req.model)
        # Same msg-id as the router's result would have: a request answered twice still has one result.
        msg_id = subjects.dedup_id(req.tenant, req.request_id)
        stored = [publish(self.js, subjects.results(req.tenant, req.request_id), result, msg_id=msg_id)]
        if hit.kind == "semantic" and probe is not None:  # what was asked, should the tenant report the hit wrong
            stored.append(self.feedback.note_hit(req.tenant, req.request_id, probe.question, probe.scope))
        await asyncio.gather(*stored)

    async def _forward(
        self, req: InferenceRequest, todo: Plan, key: str, probe: Probe | None, lookup_s: float | None
    ) -> None:
        msg_id = subjects.dedup_id(req.tenant, req.request_id)
        stored = [forward_current(self.js, subjects.route(req.tenant), msg_id=msg_id)]
        if lookup_s is not None:  # a semantic lookup that served nothing: its cost is the tenant's cache overhead
            stored.append(self._usage(lookup_usage(req, lookup_s, now_ms(self.clock)), "cache_lookup"))
        if todo.store:
            ttl_s = self.settings.ttl_for(req.tenant, req.cache.ttl_s)
            stored.append(self.store.expect(req.tenant, req.request_id, pending_for(req, key, ttl_s, probe)))
        # Side by side, all stored before the ack: the answer comes back only after the router and a worker have
        # handled the request (milliseconds), the pending record takes one KV round trip. Were it ever later, that
        # one answer would just not be cached.
        await asyncio.gather(*stored)

    async def _usage(self, event: UsageEvent, what: str) -> None:
        msg_id = subjects.dedup_id(event.tenant, event.request_id, what)
        await publish(self.js, subjects.usage(event.tenant), event, msg_id=msg_id)

    async def on_result(self, result: Result) -> None:
        pending = await self.store.pending(result.tenant, result.request_id)
        if pending is not None and not storable(result):  # nothing to store: its record would only take room
            await self.store.discard(result.tenant, result.request_id)
        elif pending is not None:
            now = now_ms(self.clock)
            answer = answer_of(result, now)
            await self.store.put(pending.key, answer, ttl_s=pending.ttl_s, replace=pending.replace)
            if self.semantic is not None and pending.vector is not None and pending.question and pending.scope:
                probe = Probe(question=pending.question, scope=pending.scope, vector=vector_from(pending.vector))
                expires_ms = now + pending.ttl_s * 1000
                await self.semantic.store(result.tenant, pending.key, probe, answer, expires_ms=expires_ms)
        await ack_current()

    async def on_control(self, cmd: CacheInvalidation | CacheWrongHit) -> None:
        """Both commands share the control subject (the consumer refused any other tenant's)."""
        if isinstance(cmd, CacheWrongHit):
            await self.on_wrong_hit(cmd)
        else:
            await self.on_invalidate(cmd)

    async def on_invalidate(self, cmd: CacheInvalidation) -> None:
        """Forget one answer or a whole tenant's, in both caches."""
        await self._forget(cmd.tenant, cmd.cached_request_id)
        log.info("forgot %s of %s (%s)", cmd.cached_request_id or "every answer", cmd.tenant, cmd.reason or "-")
        await ack_current()

    async def _forget(self, tenant: str, request_id: str | None) -> None:
        if request_id is None:
            await self.store.forget_tenant(tenant)
        else:
            await self.store.forget(tenant, request_id)
        if self.semantic is not None:
            await self.semantic.index.forget(tenant, request_id)

    async def on_wrong_hit(self, cmd: CacheWrongHit) -> None:
        """Forget the entry that served a wrong hit, record the pair, raise the tenant's floor, tell billing.

        Every step is idempotent, so a redelivery after a crash repeats them safely."""
        result = await stored_result(self.js, cmd.tenant, cmd.request_id)
        if result is None or result.cache is None:
            why = "has no result" if result is None else "was not answered by the cache"
            reason = f"request {cmd.request_id} of {cmd.tenant} {why}: no cache hit to report wrong"
            # No error result: the request named already has its result (or is not ours to answer).
            code, msg = ErrorCode.INVALID_REQUEST, current_message()
            await give_up(self.js, msg, service=SERVICE, code=code, reason=reason, tenant_hint=cmd.tenant, reply=False)
            return
        hit = result.cache
        pair = await self._wrong_pair(cmd, hit)  # before forgetting: the index still holds the cached question
        await self._forget(cmd.tenant, hit.cached_request_id)
        await self.feedback.record(cmd.tenant, pair)
        if hit.kind == "semantic":  # an exact hit's answer was wrong, not the match: no threshold to tighten
            await self.feedback.raise_floor(cmd.tenant, hit.similarity)
        await self._usage(wrong_hit_usage(result, now_ms(self.clock)), "wrong_hit")
        log.info("wrong %s hit %s of %s forgot %s", hit.kind, cmd.request_id, cmd.tenant, hit.cached_request_id)
        await ack_current()

    async def _wrong_pair(self, cmd: CacheWrongHit, hit: CacheHit) -> WrongPair:
        note = await self.feedback.hit_note(cmd.tenant, cmd.request_id) if hit.kind == "semantic" else None
        return WrongPair(
            request_id=cmd.request_id,
            cached_request_id=hit.cached_request_id,
            kind=hit.kind,
            similarity=hit.similarity,
            question=note.question if note else "",
            cached_question=await self._cached_question(cmd.tenant, note, hit.cached_request_id) if note else "",
            reason=cmd.reason,
            reported_ms=now_ms(self.clock),
        )

    async def _cached_question(self, tenant: str, note: HitNote, cached_request_id: str) -> str:
        """The cached question as the index holds it: the entry nearest the question asked, in its scope, if that is
        still the one that answered (empty when it expired, was forgotten or a closer one was stored since)."""
        if self.semantic is None:
            return ""
        vector, _ = await self.semantic.embedder.embed_costed(note.question)
        found = await self.semantic.index.nearest(tenant, note.scope, vector, now_ms=now_ms(self.clock))
        return str(found.payload["question"]) if found and found.payload["request_id"] == cached_request_id else ""

    async def _sweep(self, semantic: SemanticCache) -> None:
        while True:
            await asyncio.sleep(self.settings.sweep_s)
            try:
                await semantic.index.sweep(now_ms(self.clock), self.settings.semantic_max_entries)
            except Exception:  # a failed sweep leaves expired entries a while longer; lookups filter them anyway
                log.warning("vector index sweep failed", exc_info=True)

    async def start(self) -> None:
        if self.semantic is not None:
            sweeper = asyncio.create_task(self._sweep(self.semantic), name="vector-sweep")
            self._owned.callback(sweeper.cancel)
        for consumer in self.consumers:
            await consumer.start(self.js)
            self._owned.push_async_callback(consumer.stop)

    async def stop(self) -> None:
        await self._owned.aclose()
