"""Composition root of the cache: the only place it connects to anything."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
from faststream.nats import NatsBroker
from opentelemetry.trace import TracerProvider

from costwise.contracts import CacheHit, CacheInvalidation, ErrorCode, InferenceRequest, Result, Usage, subjects
from costwise.contracts.subjects import CACHE_CONTROL, CACHE_EXACT, CACHE_PENDING, CACHE_REQUESTS, CACHE_RESULTS
from costwise.embed import Backend, Embedder
from costwise.messaging import (
    ack_current,
    cap_key_value,
    current_subject,
    forward_current,
    make_broker,
    provision,
    publish_durable,
    pull_subscriber,
    reject_current,
)
from costwise.telemetry import record_result

from ._qdrant import QdrantIndex
from ._semantic import Probe, SemanticCache, vector_bytes, vector_from
from ._store import CachedAnswer, ExactStore, Pending
from ._vectors import EdgeIndex, VectorIndex
from .keys import exact_key, is_cacheable
from .settings import CacheSettings

__all__ = ["Cache", "build"]

log = logging.getLogger("costwise.cache")
SERVICE = "cache"
CONSUMERS = (CACHE_REQUESTS, CACHE_RESULTS, CACHE_CONTROL)
# Only answers a model produced are stored: never errors, our own hits, or truncated output.
_STORABLE_SOURCES = ("engine", "provider")


class Cache:
    """Answers repeated requests from the store and forwards the rest to the router; learns from results."""

    def __init__(
        self,
        settings: CacheSettings,
        broker: NatsBroker,
        clock: Callable[[], float],
        semantic: SemanticCache | None,
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.clock = clock
        self.semantic = semantic
        self.store: ExactStore | None = None  # bound in start(): the buckets need a live connection
        self._sweeper: asyncio.Task[None] | None = None
        pull_subscriber(broker, CACHE_REQUESTS, batch=settings.batch, concurrency=settings.concurrency)(self.on_request)
        pull_subscriber(broker, CACHE_RESULTS, batch=settings.batch, concurrency=settings.concurrency)(self.on_result)
        pull_subscriber(broker, CACHE_CONTROL, batch=8)(self.on_invalidate)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def on_request(self, req: InferenceRequest) -> None:
        key = exact_key(req)
        probe = None
        started = time.perf_counter()
        hit = await self._exact(req, key)
        exact_s = time.perf_counter() - started  # a KV read: its wall time is what it took
        if hit is None:
            probe = await self.semantic.probe(req) if self.semantic and _semantic_allowed(req) else None
            hit = await self._similar(req, probe) if probe is not None else None
        if hit is not None:
            answer, found = hit
            await self._answer(req, answer, msgspec.structs.replace(found, compute_s=exact_s + found.compute_s))
        else:
            await self._forward(req, key, probe)
        await ack_current()

    async def _exact(self, req: InferenceRequest, key: str) -> tuple[CachedAnswer, CacheHit] | None:
        answer = await self._store().get(key) if req.cache.mode == "use" else None
        if answer is None:
            return None
        return answer, CacheHit(kind="exact", cached_request_id=answer.request_id, saved=answer.usage)

    async def _similar(self, req: InferenceRequest, probe: Probe) -> tuple[CachedAnswer, CacheHit] | None:
        assert self.semantic is not None
        if req.cache.mode != "use":
            return None
        found = await self.semantic.lookup(req, probe, now_ms=self._now_ms())
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
        result = Result(
            request_id=req.request_id,
            tenant=req.tenant,
            status="ok",
            output=answer.output,
            source="cache_exact" if hit.kind == "exact" else "cache_semantic",
            model=answer.model,
            usage=Usage(),  # nothing was generated for this request
            callback_url=req.callback_url,
            created_ms=req.created_ms,
            completed_ms=self._now_ms(),
            cache=hit,
            api_key_id=req.api_key_id,
        )
        record_result(result, requested_model=req.model)
        # Same msg-id as the router's result would have: a request answered twice still has one result.
        msg_id = subjects.dedup_id(req.tenant, req.request_id)
        await publish_durable(self.broker, result, subjects.results(req.tenant, req.request_id), msg_id=msg_id)

    async def _forward(self, req: InferenceRequest, key: str, probe: Probe | None) -> None:
        if is_cacheable(req):
            ttl_s = self.settings.ttl_for(req.tenant, req.cache.ttl_s)
            pending = Pending(key=key, ttl_s=ttl_s, replace=req.cache.mode == "refresh")
            if probe is not None:
                vector = vector_bytes(probe.vector)
                pending = msgspec.structs.replace(pending, question=probe.question, scope=probe.scope, vector=vector)
            await self._store().expect(req.tenant, req.request_id, pending)
        msg_id = subjects.dedup_id(req.tenant, req.request_id)
        await forward_current(self.broker.connection.jetstream(), subjects.route(req.tenant), msg_id=msg_id)

    async def on_result(self, result: Result) -> None:
        pending = await self._store().take_pending(result.tenant, result.request_id) if _storable(result) else None
        if pending is not None and result.output is not None:
            now = self._now_ms()
            answer = CachedAnswer(
                request_id=result.request_id,
                output=result.output,
                model=result.model,
                usage=result.usage,
                stored_ms=now,
            )
            await self._store().put(pending.key, answer, ttl_s=pending.ttl_s, replace=pending.replace)
            if self.semantic is not None and pending.vector is not None and pending.question and pending.scope:
                probe = Probe(question=pending.question, scope=pending.scope, vector=vector_from(pending.vector))
                expires_ms = now + pending.ttl_s * 1000
                await self.semantic.store(result.tenant, pending.key, probe, answer, expires_ms=expires_ms)
        await ack_current()

    async def on_invalidate(self, cmd: CacheInvalidation) -> None:
        """Forget one answer or a whole tenant's, in both caches."""
        if current_subject() != subjects.cache_control(cmd.tenant):
            # Permissions are per subject: a tenant allowed to publish on its own must not reach another's cache.
            why = f"invalidation for tenant {cmd.tenant!r} arrived on another tenant's subject"
            await reject_current(
                self.broker.connection.jetstream(), service=SERVICE, code=ErrorCode.INVALID_REQUEST, reason=why
            )
            return
        if cmd.cached_request_id is None:
            await self._store().forget_tenant(cmd.tenant)
        else:
            await self._store().forget(cmd.tenant, cmd.cached_request_id)
        if self.semantic is not None:
            await self.semantic.index.forget(cmd.tenant, cmd.cached_request_id)
        log.info("forgot %s of %s (%s)", cmd.cached_request_id or "every answer", cmd.tenant, cmd.reason or "-")
        await ack_current()

    async def _sweep(self) -> None:
        assert self.semantic is not None
        while True:
            await asyncio.sleep(self.settings.sweep_s)
            try:
                await self.semantic.index.sweep(self._now_ms(), self.settings.semantic_max_entries)
            except Exception:  # a failed sweep leaves expired entries a while longer; lookups filter them anyway
                log.warning("vector index sweep failed", exc_info=True)

    def _store(self) -> ExactStore:
        if self.store is None:
            raise RuntimeError("Cache.start() binds the store before any message is handled")
        return self.store

    async def start(self) -> None:
        await self.broker.connect()
        js = self.broker.connection.jetstream()
        await cap_key_value(js, CACHE_EXACT, self.settings.max_entries * 2)  # each answer + its request-id index
        self.store = ExactStore(
            await self.broker.key_value(CACHE_EXACT.bucket, declare=False),
            await self.broker.key_value(CACHE_PENDING.bucket, declare=False),
            js=js,
            bucket=CACHE_EXACT.bucket,
        )
        if self.semantic is not None:
            self._sweeper = asyncio.create_task(self._sweep(), name="vector-sweep")
        await self.broker.start()

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self.broker.stop()
        if self.semantic is not None:
            await self.semantic.close()


def _semantic_allowed(req: InferenceRequest) -> bool:
    # The embedding is worth computing only if it is looked up now or stored with the answer later.
    return req.cache.semantic and (req.cache.mode == "use" or is_cacheable(req))


def _storable(result: Result) -> bool:
    return (
        result.status == "ok"
        and result.source in _STORABLE_SOURCES
        and result.output is not None
        and result.output.finish_reason == "stop"
    )


async def build(
    settings: CacheSettings,
    *,
    broker: NatsBroker | None = None,
    tracer_provider: TracerProvider | None = None,
    clock: Callable[[], float] = time.time,
    semantic: SemanticCache | None = None,
) -> Cache:
    """Provision the cache's buckets and consumers and wire its handlers (call ``start()`` to begin pulling).

    With ``settings.semantic`` and no ``semantic`` given, loads the embedding model, the hit verifier and
    the Qdrant Edge index under ``settings.data_dir`` (tests inject one built on session-wide models).
    """
    await provision(settings.nats_url, CONSUMERS, name=SERVICE)
    broker = broker or make_broker(
        settings.nats_url, service=SERVICE, consumers=CONSUMERS, tracer_provider=tracer_provider
    )
    if semantic is None and settings.semantic:
        if settings.qdrant_url:
            index: VectorIndex = await QdrantIndex.connect(settings.qdrant_url)
        else:
            index = await asyncio.to_thread(
                EdgeIndex.open, Path(settings.data_dir) / "semantic", search_threads=settings.search_threads
            )
        semantic = await asyncio.to_thread(load_semantic, index, settings.embed_backend, settings.embed_workers)
    return Cache(settings, broker, clock, semantic)


def load_semantic(index: VectorIndex, embed_backend: Backend = "onnx-int8", embed_workers: int = 2) -> SemanticCache:
    """Embedder + verifier over ``index``: the semantic cache's parts, each model loaded once per process."""
    from .verify import Verifier

    embedder = Embedder.load(threads=1, backend=embed_backend, workers=embed_workers)
    # The verifier's pre-threshold and calibration are per vector space: it must judge the cosines this embedder gives.
    return SemanticCache(embedder, index, Verifier.load(threads=1, space=embedder.space))
