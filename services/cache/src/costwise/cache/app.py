"""Composition root of the cache: the only place it connects to anything."""

from __future__ import annotations

import time
from collections.abc import Callable

from faststream.nats import NatsBroker
from opentelemetry.trace import TracerProvider

from costwise.contracts import CacheHit, InferenceRequest, Result, Usage, subjects
from costwise.contracts.subjects import CACHE_EXACT, CACHE_PENDING, CACHE_REQUESTS, CACHE_RESULTS
from costwise.messaging import (
    ack_current,
    connect,
    ensure_consumer,
    ensure_streams,
    forward_current,
    make_broker,
    publish_durable,
    pull_subscriber,
)

from ._store import CachedAnswer, ExactStore, Pending
from .keys import exact_key, is_cacheable
from .settings import CacheSettings

__all__ = ["Cache", "build"]

SERVICE = "cache"
CONSUMERS = (CACHE_REQUESTS, CACHE_RESULTS)
# Only answers a model produced are stored: never errors, our own hits, or truncated output.
_STORABLE_SOURCES = ("engine", "provider")


class Cache:
    """Answers repeated requests from the store and forwards the rest to the router; learns from results."""

    def __init__(self, settings: CacheSettings, broker: NatsBroker, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.broker = broker
        self.clock = clock
        self.store: ExactStore | None = None  # bound in start(): the buckets need a live connection
        pull_subscriber(broker, CACHE_REQUESTS, batch=settings.batch, concurrency=settings.concurrency)(self.on_request)
        pull_subscriber(broker, CACHE_RESULTS, batch=settings.batch, concurrency=settings.concurrency)(self.on_result)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def on_request(self, req: InferenceRequest) -> None:
        store = self._store()
        key = exact_key(req)
        answer = await store.get(key) if req.cache.mode == "use" else None
        if answer is not None:
            await self._answer(req, answer)
        else:
            if is_cacheable(req):
                await store.expect(req.tenant, req.request_id, Pending(key=key, ttl_s=self._ttl(req)))
            msg_id = subjects.dedup_id(req.tenant, req.request_id)
            await forward_current(self.broker, subjects.route(req.tenant), msg_id=msg_id)
        await ack_current(self.broker)

    async def _answer(self, req: InferenceRequest, answer: CachedAnswer) -> None:
        hit = CacheHit(kind="exact", cached_request_id=answer.request_id, saved=answer.usage)
        result = Result(
            request_id=req.request_id,
            tenant=req.tenant,
            status="ok",
            output=answer.output,
            source="cache_exact",
            model=answer.model,
            usage=Usage(),  # nothing was generated for this request
            callback_url=req.callback_url,
            created_ms=req.created_ms,
            completed_ms=self._now_ms(),
            cache=hit,
        )
        # Same msg-id as the router's result would have: a request answered twice still has one result.
        msg_id = subjects.dedup_id(req.tenant, req.request_id)
        await publish_durable(self.broker, result, subjects.results(req.tenant, req.request_id), msg_id=msg_id)

    async def on_result(self, result: Result) -> None:
        if _storable(result):
            store = self._store()
            pending = await store.take_pending(result.tenant, result.request_id)
            if pending is not None and result.output is not None:
                answer = CachedAnswer(
                    request_id=result.request_id,
                    output=result.output,
                    model=result.model,
                    usage=result.usage,
                    stored_ms=self._now_ms(),
                )
                await store.put(pending.key, answer, ttl_s=pending.ttl_s)
        await ack_current(self.broker)

    def _ttl(self, req: InferenceRequest) -> int:
        return req.cache.ttl_s or self.settings.ttl_s

    def _store(self) -> ExactStore:
        if self.store is None:
            raise RuntimeError("Cache.start() binds the store before any message is handled")
        return self.store

    async def start(self) -> None:
        await self.broker.connect()
        self.store = ExactStore(
            await self.broker.key_value(CACHE_EXACT.bucket, declare=False),
            await self.broker.key_value(CACHE_PENDING.bucket, declare=False),
        )
        await self.broker.start()

    async def stop(self) -> None:
        await self.broker.stop()


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
) -> Cache:
    """Provision the cache's buckets and consumers and wire its handlers (call ``start()`` to begin pulling)."""
    nc = await connect(settings.nats_url, name=f"{SERVICE}-provision")
    try:
        js = nc.jetstream()
        await ensure_streams(js)  # streams and key-value buckets; idempotent
        for spec in CONSUMERS:
            await ensure_consumer(js, spec)
    finally:
        await nc.close()
    broker = broker or make_broker(
        settings.nats_url, service=SERVICE, consumers=CONSUMERS, tracer_provider=tracer_provider
    )
    return Cache(settings, broker, clock)
