"""The cache's handlers: a request is answered from the store or forwarded to the router; a result is stored."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import msgspec
from nats.aio.client import Client
from opentelemetry.trace import Tracer

from costwise.contracts import CacheHit, CacheInvalidation, Clock, InferenceRequest, Result, now_ms, subjects
from costwise.contracts.subjects import CACHE_CONTROL, CACHE_REQUESTS, CACHE_RESULTS
from costwise.messaging import Consumer, ack_current, forward_current, publish
from costwise.telemetry import record_result

from ._policy import Plan, answer_of, hit_result, pending_for, plan, storable
from ._semantic import Probe, SemanticCache, vector_from
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
        clock: Clock,
        tracer: Tracer | None,
        owned: contextlib.AsyncExitStack,
    ) -> None:
        self.settings = settings
        self.nc = nc
        self.js = nc.jetstream()
        self.store = store
        self.semantic = semantic
        self.clock = clock
        self._owned = owned
        """What ``build`` opened; ``start`` adds what it starts, so ``stop`` closes it all in reverse."""
        self.consumers = [
            Consumer(spec, handler, service=SERVICE, concurrency=concurrency, tracer=tracer)
            for spec, handler, concurrency in (
                (CACHE_REQUESTS, self.on_request, settings.concurrency),
                (CACHE_RESULTS, self.on_result, settings.concurrency),
                (CACHE_CONTROL, self.on_invalidate, 1),
            )
        ]

    async def on_request(self, req: InferenceRequest) -> None:
        todo, key = plan(req), exact_key(req)
        started = time.perf_counter()
        hit = await self._exact(key) if todo.look_up else None
        exact_s = time.perf_counter() - started  # a KV read: its wall time is what it took
        probe = await self.semantic.probe(req) if hit is None and self.semantic and todo.semantic else None
        if probe is not None and todo.look_up:
            hit = await self._similar(req, probe)
        if hit is not None:
            answer, found = hit
            await self._answer(req, answer, msgspec.structs.replace(found, compute_s=exact_s + found.compute_s))
        else:
            await self._forward(req, todo, key, probe)
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
        hit = CacheHit(
            kind="semantic",
            cached_request_id=answer.request_id,
            similarity=found.similarity,
            saved=answer.usage,
            compute_s=found.compute_s,
        )
        return answer, hit

    async def _answer(self, req: InferenceRequest, answer: CachedAnswer, hit: CacheHit) -> None:
        result = hit_result(req, answer, hit, now_ms(self.clock))
        record_result(result, requested_model=req.model)
        # Same msg-id as the router's result would have: a request answered twice still has one result.
        msg_id = subjects.dedup_id(req.tenant, req.request_id)
        await publish(self.js, subjects.results(req.tenant, req.request_id), result, msg_id=msg_id)

    async def _forward(self, req: InferenceRequest, todo: Plan, key: str, probe: Probe | None) -> None:
        msg_id = subjects.dedup_id(req.tenant, req.request_id)
        forwarding = forward_current(self.js, subjects.route(req.tenant), msg_id=msg_id)
        if not todo.store:
            await forwarding
            return
        ttl_s = self.settings.ttl_for(req.tenant, req.cache.ttl_s)
        pending = pending_for(req, key, ttl_s, probe)
        # Side by side, both stored before the ack: the answer comes back only after the router and a worker have
        # handled the request (milliseconds), the pending record takes one KV round trip. Were it ever later, that
        # one answer would just not be cached.
        await asyncio.gather(self.store.expect(req.tenant, req.request_id, pending), forwarding)

    async def on_result(self, result: Result) -> None:
        pending = await self.store.take_pending(result.tenant, result.request_id) if storable(result) else None
        if pending is not None:
            now = now_ms(self.clock)
            answer = answer_of(result, now)
            await self.store.put(pending.key, answer, ttl_s=pending.ttl_s, replace=pending.replace)
            if self.semantic is not None and pending.vector is not None and pending.question and pending.scope:
                probe = Probe(question=pending.question, scope=pending.scope, vector=vector_from(pending.vector))
                expires_ms = now + pending.ttl_s * 1000
                await self.semantic.store(result.tenant, pending.key, probe, answer, expires_ms=expires_ms)
        await ack_current()

    async def on_invalidate(self, cmd: CacheInvalidation) -> None:
        """Forget one answer or a whole tenant's, in both caches (the consumer refused any other tenant's)."""
        if cmd.cached_request_id is None:
            await self.store.forget_tenant(cmd.tenant)
        else:
            await self.store.forget(cmd.tenant, cmd.cached_request_id)
        if self.semantic is not None:
            await self.semantic.index.forget(cmd.tenant, cmd.cached_request_id)
        log.info("forgot %s of %s (%s)", cmd.cached_request_id or "every answer", cmd.tenant, cmd.reason or "-")
        await ack_current()

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
