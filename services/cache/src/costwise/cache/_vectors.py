"""Where the semantic cache keeps question vectors: Qdrant Edge in-process (embedded default).

Every query is filtered by tenant and scope inside the index; the API has no way to search without a
tenant, which is how one tenant's entries can never come back to another.
"""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from costwise.embed import DIMENSIONS

__all__ = ["Candidate", "EdgeIndex", "VectorIndex", "point_id"]

_IDS = uuid.UUID("1f6c0d1e-3c1b-4b8e-9a0e-6a1d1b3c5e7f")  # namespace for deterministic point ids


def point_id(key: str) -> str:
    """A stable point id for an entry key: storing the same entry twice overwrites, it does not duplicate."""
    return str(uuid.uuid5(_IDS, key))


@dataclass(frozen=True)
class Candidate:
    similarity: float
    payload: dict[str, Any]


class VectorIndex(Protocol):
    async def nearest(
        self, tenant: str, scope: str, vector: NDArray[np.float32], *, now_ms: int
    ) -> Candidate | None: ...

    async def nearest_k(
        self, tenant: str, scope: str, vector: NDArray[np.float32], *, now_ms: int, limit: int
    ) -> list[Candidate]: ...

    async def upsert(self, key: str, vector: NDArray[np.float32], payload: dict[str, Any]) -> None: ...

    async def forget(self, tenant: str, request_id: str | None = None) -> None: ...

    async def sweep(self, now_ms: int, max_entries: int) -> int: ...

    async def close(self) -> None: ...


class EdgeIndex:
    """A Qdrant Edge shard on local disk. One process owns it: scale-out deployments use a Qdrant server."""

    def __init__(self, shard: Any) -> None:
        self._shard = shard
        # The shard is synchronous Rust; one thread keeps it off the event loop and serialises access.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qdrant-edge")

    @classmethod
    def open(cls, path: Path, *, search_threads: int = 1) -> EdgeIndex:
        """Open the shard at ``path``, creating it if missing; an older shard takes this layout as it is optimised.

        ``search_threads``: Qdrant Edge's pool that searches a query's segments in parallel. One leaves the other
        core to the embedding workers: on 2 cores the CPU-derived default (2) made the whole lookup path
        slower (medians of 5, 10k / 100k entries: 857 / 629 lookups/s on one thread, 713 / 556 on two;
        docs/benchmarks.md).
        """
        from qdrant_edge import EdgeShard, UpdateOperation

        config = _config(search_threads)
        if (path / "edge_config.json").exists():
            shard = EdgeShard.load(str(path), config)
        else:
            path.mkdir(parents=True, exist_ok=True)
            shard = EdgeShard.create(str(path), config)
        for field, schema in _field_indexes().items():  # idempotent; gives an older shard the tenant index
            shard.update(UpdateOperation.create_field_index(field, schema))
        return cls(shard)

    async def nearest(self, tenant: str, scope: str, vector: NDArray[np.float32], *, now_ms: int) -> Candidate | None:
        found = await self.nearest_k(tenant, scope, vector, now_ms=now_ms, limit=1)
        return found[0] if found else None

    async def nearest_k(
        self, tenant: str, scope: str, vector: NDArray[np.float32], *, now_ms: int, limit: int
    ) -> list[Candidate]:
        """Up to ``limit`` unexpired entries of ``tenant`` in ``scope``, nearest first, with their exact cosines."""
        from qdrant_edge import FieldCondition, Filter, MatchValue, Query, QueryRequest, RangeFloat

        only_here = Filter(
            must=[
                FieldCondition(key="tenant", match=MatchValue(tenant)),
                FieldCondition(key="scope", match=MatchValue(scope)),
                FieldCondition(key="expires_ms", range=RangeFloat(gt=float(now_ms))),
            ]
        )
        request = QueryRequest(
            limit=limit,
            query=Query.Nearest(vector.tolist()),
            filter=only_here,
            with_payload=True,
            params=_search_params(),
        )
        points = await self._run(self._shard.query, request)
        return [Candidate(similarity=float(p.score), payload=dict(p.payload or {})) for p in points]

    async def upsert(self, key: str, vector: NDArray[np.float32], payload: dict[str, Any]) -> None:
        await self.upsert_many([(key, vector, payload)])

    async def upsert_many(self, entries: list[tuple[str, NDArray[np.float32], dict[str, Any]]]) -> None:
        from qdrant_edge import Point, UpdateOperation

        points = [Point(point_id(key), vector.tolist(), payload) for key, vector, payload in entries]
        await self._run(self._shard.update, UpdateOperation.upsert_points(points))

    async def forget(self, tenant: str, request_id: str | None = None) -> None:
        """Delete ``tenant``'s entries: all of them, or the one ``request_id`` produced."""
        from qdrant_edge import FieldCondition, Filter, MatchValue, UpdateOperation

        must: list[Any] = [FieldCondition(key="tenant", match=MatchValue(tenant))]
        if request_id is not None:
            must.append(FieldCondition(key="request_id", match=MatchValue(request_id)))
        await self._run(self._shard.update, UpdateOperation.delete_points_by_filter(Filter(must=must)))

    async def sweep(self, now_ms: int, max_entries: int) -> int:
        """Drop expired entries, then the soonest-to-expire ones beyond ``max_entries``, then index what was
        added since the last sweep (see :meth:`optimize`); returns how many entries remain."""
        from qdrant_edge import (
            CountRequest,
            Direction,
            FieldCondition,
            Filter,
            OrderBy,
            RangeFloat,
            ScrollRequest,
            UpdateOperation,
        )

        expired = Filter(must=[FieldCondition(key="expires_ms", range=RangeFloat(lte=float(now_ms)))])
        await self._run(self._shard.update, UpdateOperation.delete_points_by_filter(expired))
        count = int(await self._run(self._shard.count, CountRequest(exact=True)))
        if count > max_entries:
            oldest = ScrollRequest(
                limit=count - max_entries, order_by=OrderBy("expires_ms", Direction.Asc), with_payload=False
            )
            points, _ = await self._run(self._shard.scroll, oldest)
            await self._run(self._shard.update, UpdateOperation.delete_points([p.id for p in points]))
            count -= len(points)
        await self.optimize()
        return count

    async def optimize(self) -> None:
        """Turn the points added since the last call into an indexed segment (quantized, grouped by tenant).

        Qdrant Edge has no background optimizer: without this every point stays in the appendable segment
        and each lookup scans its tenant's points at full precision (3.5 ms at 100k entries vs 0.4 ms).
        It holds the GIL while it runs (~0.2 s per new segment here), so it runs with the sweep, not per write.
        """
        await self._run(self._shard.optimize)

    async def indexed(self) -> tuple[int, int]:
        """(entries, entries in an indexed segment): the difference is what the next sweep will index."""
        info = await self._run(self._shard.info)
        return int(info.points_count), int(info.indexed_vectors_count)

    async def close(self) -> None:
        await self._run(self._shard.flush)
        await self._run(self._shard.close)
        self._thread.shutdown(wait=True)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)


# Multitenant layout, as Qdrant recommends it: no global HNSW graph (every query filters by tenant, so it
# would never be used, and building it took 5 min at 100k entries on 2 cores), a graph per tenant once a
# tenant outgrows a plain scan (payload_m), the tenant's points stored together (is_tenant), int8 copies
# of the vectors in RAM scanned first and the best candidates rescored at full precision.
_OVERSAMPLING = 4.0  # best 4 by int8 score rescored: top-1 recall 1.0 vs exact on 600 queries at 100k
_SEGMENT_KB = 32_000  # an optimize indexes new points into segments of at most ~20k vectors, never re-indexing all


def _config(search_threads: int) -> Any:
    from qdrant_edge import (
        Distance,
        EdgeConfig,
        EdgeOptimizersConfig,
        EdgeVectorParams,
        HnswIndexConfig,
        ScalarQuantizationConfig,
        ScalarType,
    )

    return EdgeConfig(
        vectors=EdgeVectorParams(size=DIMENSIONS, distance=Distance.Cosine),
        hnsw_config=HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10_000, payload_m=16),
        quantization_config=ScalarQuantizationConfig(type=ScalarType.Int8, always_ram=True),
        optimizers=EdgeOptimizersConfig(max_segment_size=_SEGMENT_KB),
        max_search_threads=search_threads,
    )


def _field_indexes() -> dict[str, Any]:
    """Every filter field indexed: each query filters on tenant, scope and expiry, deletes on request_id."""
    from qdrant_edge import FloatIndexParams, KeywordIndexParams

    return {
        "tenant": KeywordIndexParams(is_tenant=True),
        "scope": KeywordIndexParams(),
        "request_id": KeywordIndexParams(enable_hnsw=False),  # one point per value: no graph to build
        "expires_ms": FloatIndexParams(enable_hnsw=False),
    }


def _search_params() -> Any:
    from qdrant_edge import QuantizationSearchParams, SearchParams

    # Rescored, so the similarity the verifier sees is the exact cosine, not the int8 estimate.
    return SearchParams(quantization=QuantizationSearchParams(rescore=True, oversampling=_OVERSAMPLING))
