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
    def open(cls, path: Path) -> EdgeIndex:
        from qdrant_edge import Distance, EdgeConfig, EdgeShard, EdgeVectorParams, PayloadSchemaType, UpdateOperation

        if (path / "edge_config.json").exists():
            return cls(EdgeShard.load(str(path)))
        path.mkdir(parents=True, exist_ok=True)
        shard = EdgeShard.create(
            str(path), EdgeConfig(vectors=EdgeVectorParams(size=DIMENSIONS, distance=Distance.Cosine))
        )
        # Indexed filter fields: every query filters on all three, at 100k entries a scan would not do.
        for field, kind in (
            ("tenant", PayloadSchemaType.Keyword),
            ("request_id", PayloadSchemaType.Keyword),
            ("scope", PayloadSchemaType.Keyword),
            ("expires_ms", PayloadSchemaType.Float),
        ):
            shard.update(UpdateOperation.create_field_index(field, kind))
        return cls(shard)

    async def nearest(self, tenant: str, scope: str, vector: NDArray[np.float32], *, now_ms: int) -> Candidate | None:
        from qdrant_edge import FieldCondition, Filter, MatchValue, Query, QueryRequest, RangeFloat

        only_here = Filter(
            must=[
                FieldCondition(key="tenant", match=MatchValue(tenant)),
                FieldCondition(key="scope", match=MatchValue(scope)),
                FieldCondition(key="expires_ms", range=RangeFloat(gt=float(now_ms))),
            ]
        )
        request = QueryRequest(limit=1, query=Query.Nearest(vector.tolist()), filter=only_here, with_payload=True)
        points = await self._run(self._shard.query, request)
        if not points:
            return None
        return Candidate(similarity=float(points[0].score), payload=dict(points[0].payload or {}))

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
        """Drop expired entries, then the soonest-to-expire ones beyond ``max_entries``; returns how many remain."""
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
        if count <= max_entries:
            return count
        oldest = ScrollRequest(
            limit=count - max_entries, order_by=OrderBy("expires_ms", Direction.Asc), with_payload=False
        )
        points, _ = await self._run(self._shard.scroll, oldest)
        await self._run(self._shard.update, UpdateOperation.delete_points([p.id for p in points]))
        return count - len(points)

    async def optimize(self) -> None:
        """Build the HNSW index now (after a bulk load) instead of on the first queries."""
        await self._run(self._shard.optimize)

    async def close(self) -> None:
        await self._run(self._shard.flush)
        await self._run(self._shard.close)
        self._thread.shutdown(wait=True)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)
