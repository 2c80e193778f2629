"""The vector index on a Qdrant server or cluster (``qdrant-client``): one index shared by many cache instances.

Same interface and the same rules as :class:`EdgeIndex`: every query is filtered by tenant, scope and
expiry inside Qdrant, and there is no call that searches without a tenant.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from costwise.embed import DIMENSIONS

from ._vectors import Candidate, point_id

__all__ = ["QdrantIndex"]

COLLECTION = "costwise-semantic"


class QdrantIndex:
    def __init__(self, client: Any, collection: str = COLLECTION) -> None:
        self._client = client
        self._collection = collection

    @classmethod
    async def connect(
        cls,
        url: str | None = None,
        *,
        path: str | None = None,
        api_key: str | None = None,
        collection: str = COLLECTION,
    ) -> QdrantIndex:
        """A server at ``url`` (scale-out), or qdrant-client's local mode at ``path`` (tests, one process)."""
        from qdrant_client import AsyncQdrantClient, models

        client = AsyncQdrantClient(url=url, api_key=api_key) if url else AsyncQdrantClient(path=path)
        if not await client.collection_exists(collection):
            vectors = models.VectorParams(size=DIMENSIONS, distance=models.Distance.COSINE)
            await client.create_collection(collection, vectors_config=vectors)
            keyword, number = models.PayloadSchemaType.KEYWORD, models.PayloadSchemaType.FLOAT
            for field, kind in (
                ("tenant", keyword),
                ("scope", keyword),
                ("request_id", keyword),
                ("expires_ms", number),
            ):
                await client.create_payload_index(collection, field, kind)
        return cls(client, collection)

    async def nearest(self, tenant: str, scope: str, vector: NDArray[np.float32], *, now_ms: int) -> Candidate | None:
        found = await self.nearest_k(tenant, scope, vector, now_ms=now_ms, limit=1)
        return found[0] if found else None

    async def nearest_k(
        self, tenant: str, scope: str, vector: NDArray[np.float32], *, now_ms: int, limit: int
    ) -> list[Candidate]:
        """Up to ``limit`` unexpired entries of ``tenant`` in ``scope``, nearest first."""
        from qdrant_client import models

        only_here = models.Filter(
            must=[
                models.FieldCondition(key="tenant", match=models.MatchValue(value=tenant)),
                models.FieldCondition(key="scope", match=models.MatchValue(value=scope)),
                models.FieldCondition(key="expires_ms", range=models.Range(gt=float(now_ms))),
            ]
        )
        found = await self._client.query_points(
            self._collection, query=vector.tolist(), query_filter=only_here, limit=limit, with_payload=True
        )
        return [Candidate(similarity=float(p.score), payload=dict(p.payload or {})) for p in found.points]

    async def upsert(self, key: str, vector: NDArray[np.float32], payload: dict[str, Any]) -> None:
        from qdrant_client import models

        point = models.PointStruct(id=point_id(key), vector=vector.tolist(), payload=payload)
        await self._client.upsert(self._collection, points=[point])

    async def forget(self, tenant: str, request_id: str | None = None) -> None:
        """Delete ``tenant``'s entries: all of them, or the one ``request_id`` produced."""
        from qdrant_client import models

        must: list[Any] = [models.FieldCondition(key="tenant", match=models.MatchValue(value=tenant))]
        if request_id is not None:
            must.append(models.FieldCondition(key="request_id", match=models.MatchValue(value=request_id)))
        await self._client.delete(
            self._collection, points_selector=models.FilterSelector(filter=models.Filter(must=must))
        )

    async def sweep(self, now_ms: int, max_entries: int) -> int:
        """Drop expired entries, then the soonest-to-expire ones beyond ``max_entries``; returns how many remain."""
        from qdrant_client import models

        expired = models.Filter(must=[models.FieldCondition(key="expires_ms", range=models.Range(lte=float(now_ms)))])
        await self._client.delete(self._collection, points_selector=models.FilterSelector(filter=expired))
        count = (await self._client.count(self._collection, exact=True)).count
        if count <= max_entries:
            return int(count)
        oldest = models.OrderBy(key="expires_ms", direction=models.Direction.ASC)
        points, _ = await self._client.scroll(
            self._collection, limit=count - max_entries, order_by=oldest, with_payload=False
        )
        await self._client.delete(self._collection, points_selector=models.PointIdsList(points=[p.id for p in points]))
        return int(count) - len(points)

    async def close(self) -> None:
        await self._client.close()
