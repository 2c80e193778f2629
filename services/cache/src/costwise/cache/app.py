"""Composition root of the cache: the only place it connects to anything."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from nats.aio.client import Client
from opentelemetry.trace import TracerProvider

from costwise.contracts import Clock
from costwise.contracts.subjects import (
    CACHE_CONTROL,
    CACHE_EXACT,
    CACHE_FEEDBACK,
    CACHE_REQUESTS,
    CACHE_RESULTS,
)
from costwise.embed import Backend, Embedder
from costwise.messaging import cap_key_value, own_connection, provision

from ._feedback import Feedback
from ._qdrant import QdrantIndex
from ._semantic import SemanticCache
from ._service import SERVICE, Cache
from ._store import ExactStore
from ._vectors import EdgeIndex, VectorIndex
from .settings import CacheSettings

__all__ = ["Cache", "build", "load_semantic"]

CONSUMERS = (CACHE_REQUESTS, CACHE_RESULTS, CACHE_CONTROL)


async def build(
    settings: CacheSettings,
    *,
    nc: Client | None = None,
    tracer_provider: TracerProvider | None = None,
    clock: Clock = time.time,
    semantic: SemanticCache | None = None,
) -> Cache:
    """Provision the cache's buckets and consumers and wire its handlers (call ``start()`` to begin pulling).

    With ``settings.semantic`` and no ``semantic`` given, loads the embedding model, the hit verifier and the
    vector index (Qdrant Edge under ``settings.data_dir``, or ``settings.qdrant_url``); tests inject one built
    on session-wide models, which the cache then never closes.
    """
    async with contextlib.AsyncExitStack() as stack:  # closes what was opened if building fails half-way
        nc = await own_connection(stack, settings.nats_url, nc, name=SERVICE)
        js = nc.jetstream()
        await provision(js, CONSUMERS)
        await cap_key_value(js, CACHE_EXACT, settings.max_entries * 2)  # each answer + its request's record
        store = ExactStore(await js.key_value(CACHE_EXACT.bucket), js=js, bucket=CACHE_EXACT.bucket)
        feedback = Feedback(await js.key_value(CACHE_FEEDBACK.bucket))
        if semantic is None and settings.semantic:
            semantic = await _open_semantic(settings)
            stack.push_async_callback(semantic.close)
        owned = stack.pop_all()
    tracer = tracer_provider.get_tracer("costwise.cache") if tracer_provider else None
    return Cache(settings, nc, store, semantic, feedback=feedback, clock=clock, tracer=tracer, owned=owned)


async def _open_semantic(settings: CacheSettings) -> SemanticCache:
    if settings.qdrant_url:
        index: VectorIndex = await QdrantIndex.connect(settings.qdrant_url)
    else:
        path = Path(settings.data_dir) / "semantic"
        index = await asyncio.to_thread(EdgeIndex.open, path, search_threads=settings.search_threads)
    return await asyncio.to_thread(
        load_semantic, index, settings.embed_backend, settings.embed_workers, candidates=settings.semantic_candidates
    )


def load_semantic(
    index: VectorIndex, embed_backend: Backend = "onnx-int8", embed_workers: int = 2, *, candidates: int = 1
) -> SemanticCache:
    """Embedder + verifier over ``index``: the semantic cache's parts, each model loaded once per process."""
    from .verify import Verifier

    embedder = Embedder.load(threads=1, backend=embed_backend, workers=embed_workers)
    # The verifier's pre-threshold and calibration are per vector space: it must judge the cosines this embedder gives.
    verifier = Verifier.load(threads=1, space=embedder.space)
    return SemanticCache(embedder, index, verifier, candidates=candidates)
