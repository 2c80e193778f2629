from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

__all__ = ["CacheSettings"]

_30_DAYS = 30 * 24 * 3600


class CacheSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Cache configuration, from ``COSTWISE_CACHE_*`` environment variables."""

    nats_url: str = "nats://127.0.0.1:4222"
    ttl_s: Annotated[int, Meta(ge=1, le=_30_DAYS)] = 7 * 24 * 3600
    """How long an answer stays when neither the request's cache policy nor ``tenant_ttl_s`` names one."""
    tenant_ttl_s: dict[str, Annotated[int, Meta(ge=1, le=_30_DAYS)]] = {}
    """Per-tenant default lifetimes, e.g. ``{"acme": 3600}`` (the bucket keeps nothing past 30 days)."""
    semantic: bool = True
    """Serve verified answers to equivalent, differently worded questions (loads MiniLM and the verifier)."""
    embed_backend: Literal["onnx", "onnx-int8", "torch"] = "onnx-int8"
    """MiniLM on ONNX Runtime with int8 weights (about 1.5x fp32's lookups/s; a vector space of its own with its own
    verifier calibration, same held-out recall and wrong-hit share), in fp32 ("onnx": torch's vectors), or torch.
    Entries stored under a backend of another space are not found after a change (they age out)."""
    semantic_candidates: Annotated[int, Meta(ge=1, le=8)] = 1
    """Nearest cached questions the verifier judges per lookup, in one model batch; the best accepted is served.
    On FAQ logs the nearest is another intent's about one time in three while a same-intent one is close by
    (banking77: a same-intent question is the nearest for 71 % of the requests an earlier one could answer, among
    the 3 nearest for 84 %); with the shipped model, which refuses most rewordings anyway, 3 changed nothing
    measurable, so the default stays at one model pass per lookup (docs/benchmarks.md, issue 16)."""
    embed_workers: Annotated[int, Meta(ge=1, le=8)] = 2
    """Embedding calls run at once, one thread each (2: both cores when lookups queue up)."""
    search_threads: Annotated[int, Meta(ge=1, le=64)] = 1
    """Threads Qdrant Edge searches one query's segments with (1: the embedding workers keep the other core)."""
    data_dir: str = "var/cache"
    """Where the embedded vector index (Qdrant Edge) keeps its files."""
    qdrant_url: str | None = None
    """A Qdrant server or cluster for the vector index, shared by every cache instance (scale-out);
    unset: Qdrant Edge in-process under ``data_dir`` (one cache instance)."""
    max_entries: Annotated[int, Meta(ge=1)] = 1_000_000
    """Exact answers kept (plus one small index entry each); past it the oldest are evicted first."""
    semantic_max_entries: Annotated[int, Meta(ge=1)] = 1_000_000
    """Questions kept in the vector index; past it those closest to expiry are evicted first."""
    sweep_s: Annotated[float, Meta(gt=0)] = 300.0
    """How often expired and surplus vector entries are deleted (lookups never see expired ones anyway)."""
    batch: Annotated[int, Meta(ge=1, le=1024)] = 64
    concurrency: Annotated[int, Meta(ge=1, le=1024)] = 16
    otlp_endpoint: str | None = None

    def ttl_for(self, tenant: str, requested: int | None) -> int:
        """The lifetime of an answer: the request's own, else its tenant's, else the service default."""
        return requested or self.tenant_ttl_s.get(tenant, self.ttl_s)
