"""Both vector index backends keep the same promises: tenant, scope and expiry are hard filters; forget; sweep."""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
import pytest_asyncio
from nats.aio.client import Client as Nats

from costwise.cache import (
    Cache,
    CachedAnswer,
    CacheSettings,
    EdgeIndex,
    QdrantIndex,
    SemanticCache,
    VectorIndex,
    build,
    load_semantic,
)
from costwise.client import Client, new_request_id
from costwise.contracts import ChatMessage, InferenceRequest, Output, Result, Usage, subjects
from costwise.embed import Backend, Embedder, space_of
from costwise.messaging import publish
from costwise.testing import first_stored

RNG = np.random.default_rng(7)


def _vector() -> Any:
    v = RNG.standard_normal(384).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest_asyncio.fixture(params=["edge", "qdrant"])
async def index(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[VectorIndex]:
    if request.param == "edge":
        opened: VectorIndex = EdgeIndex.open(tmp_path / "edge")
    else:
        with warnings.catch_warnings():  # local mode warns that payload indexes only matter on a server
            warnings.simplefilter("ignore")
            opened = await QdrantIndex.connect(path=str(tmp_path / "qdrant"))
    yield opened
    await opened.close()


async def test_only_live_entries_of_the_same_tenant_and_scope_are_found(index: VectorIndex) -> None:
    v = _vector()
    await index.upsert("mine", v, {"tenant": "a", "scope": "s", "request_id": "r1", "expires_ms": 2_000.0})
    await index.upsert("theirs", v, {"tenant": "b", "scope": "s", "request_id": "r2", "expires_ms": 2_000.0})
    await index.upsert("other-scope", v, {"tenant": "a", "scope": "t", "request_id": "r3", "expires_ms": 2_000.0})
    found = await index.nearest("a", "s", v, now_ms=1_000)
    assert found is not None and found.payload["request_id"] == "r1" and found.similarity == pytest.approx(1.0)
    assert await index.nearest("c", "s", v, now_ms=1_000) is None
    assert await index.nearest("a", "s", v, now_ms=2_000) is None  # expired


async def test_the_k_nearest_come_nearest_first_within_the_filters(index: VectorIndex) -> None:
    q = _vector()
    for i, weight in enumerate((0.2, 0.9, 0.5, 0.7)):  # cosine to q grows with the weight
        v = weight * q + (1 - weight) * _vector()
        payload = {"tenant": "a", "scope": "s", "request_id": f"r{i}", "expires_ms": 2_000.0}
        await index.upsert(f"k{i}", (v / np.linalg.norm(v)).astype(np.float32), payload)
    await index.upsert("theirs", q, {"tenant": "b", "scope": "s", "request_id": "x", "expires_ms": 2_000.0})
    found = await index.nearest_k("a", "s", q, now_ms=1_000, limit=3)
    assert [c.payload["request_id"] for c in found] == ["r1", "r3", "r2"]
    assert found[0].similarity > found[1].similarity > found[2].similarity
    assert len(await index.nearest_k("a", "s", q, now_ms=1_000, limit=10)) == 4
    assert await index.nearest_k("a", "s", q, now_ms=2_000, limit=3) == []  # all expired


async def test_forget_one_answer_or_a_whole_tenant(index: VectorIndex) -> None:
    v = _vector()
    for i, tenant in enumerate(("a", "a", "b")):
        await index.upsert(f"k{i}", v, {"tenant": tenant, "scope": "s", "request_id": f"r{i}", "expires_ms": 9e12})
    await index.forget("a", "r0")
    found = await index.nearest("a", "s", v, now_ms=0)
    assert found is not None and found.payload["request_id"] == "r1"
    await index.forget("a")
    assert await index.nearest("a", "s", v, now_ms=0) is None
    assert await index.nearest("b", "s", v, now_ms=0) is not None


async def test_sweep_drops_expired_then_the_soonest_to_expire(index: VectorIndex) -> None:
    for i in range(5):
        payload = {"tenant": "t", "scope": "s", "request_id": f"r{i}", "expires_ms": float(1_000 + i)}
        await index.upsert(f"k{i}", _vector(), payload)
    assert await index.sweep(1_000, max_entries=2) == 2  # r0 expired; r1, r2 evicted
    found = await index.nearest("t", "s", _vector(), now_ms=0)
    assert found is not None and found.payload["request_id"] in {"r3", "r4"}


@pytest_asyncio.fixture
async def qdrant_cache(nats_url: str, semantic_models: Any, tmp_path: Path) -> AsyncIterator[Cache]:
    embedder, verifier = semantic_models
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index = await QdrantIndex.connect(path=str(tmp_path / "qdrant"))
    service = await build(CacheSettings(nats_url=nats_url), semantic=SemanticCache(embedder, index, verifier))
    await service.start()
    yield service
    await service.stop()


async def test_the_cache_serves_verified_semantic_hits_through_qdrant_client(
    nc: Nats, qdrant_cache: Cache, unique: str
) -> None:
    client, js = Client(nc), nc.jetstream()
    first = InferenceRequest(
        request_id=new_request_id(),
        tenant=unique,
        messages=[ChatMessage(role="user", content="How do I reset my password?")],
    )
    await client.publish(first)
    # Answer only once the cache has forwarded the miss (and so knows where to store the answer).
    await first_stored(js, subjects.route(unique), InferenceRequest, lambda r: r.request_id == first.request_id)
    answer = Result(
        request_id=first.request_id,
        tenant=unique,
        status="ok",
        output=Output(text="Settings.", finish_reason="stop"),
        source="engine",
        usage=Usage(prompt_tokens=5, completion_tokens=1),
    )
    await publish(
        js, subjects.results(unique, first.request_id), answer, msg_id=subjects.dedup_id(unique, first.request_id)
    )
    reworded = [ChatMessage(role="user", content="How can I reset my password?")]
    for _ in range(50):  # stored a moment after the cache consumes the result
        ask = msgspec.structs.replace(first, request_id=new_request_id(), messages=reworded)
        await client.publish(ask)
        try:
            result = await client.result(unique, ask.request_id, timeout=0.5)
        except TimeoutError:
            continue
        assert result.source == "cache_semantic" and result.cache is not None
        assert result.cache.cached_request_id == first.request_id
        return
    raise AssertionError("no semantic hit through the qdrant-client index")


def _unit_vectors(n: int, seed: int) -> Any:
    v = np.random.default_rng(seed).standard_normal((n, 384)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


async def _fill(index: EdgeIndex, vectors: Any, tenants: int) -> None:
    entries = [
        (f"k{i}", v, {"tenant": f"t{i % tenants}", "scope": "s", "request_id": f"r{i}", "expires_ms": 9e12})
        for i, v in enumerate(vectors)
    ]
    for start in range(0, len(entries), 1000):
        await index.upsert_many(entries[start : start + 1000])


async def test_the_sweep_indexes_new_entries_and_lookups_stay_exact(tmp_path: Path) -> None:
    # Past Edge's indexing threshold (~6.5k vectors), so the sweep builds a quantized, tenant-grouped segment.
    index = EdgeIndex.open(tmp_path / "edge")
    stored = _unit_vectors(8_000, seed=1)
    await _fill(index, stored, tenants=2)
    assert await index.indexed() == (8_000, 0)
    assert await index.sweep(0, max_entries=100_000) == 8_000
    assert await index.indexed() == (8_000, 8_000)
    queries = _unit_vectors(50, seed=2)
    for i, q in enumerate(queries):
        tenant = i % 2  # the exact nearest among this tenant's entries, and its exact cosine (rescored, not int8)
        mine = stored[tenant::2]
        best = int(np.argmax(mine @ q))
        found = await index.nearest(f"t{tenant}", "s", q, now_ms=0)
        assert found is not None and found.payload["request_id"] == f"r{best * 2 + tenant}"
        assert found.similarity == pytest.approx(float(mine[best] @ q), abs=1e-5)
    await index.close()


async def test_a_shard_from_before_the_tenant_layout_opens_and_is_upgraded(tmp_path: Path) -> None:
    from qdrant_edge import Distance, EdgeConfig, EdgeShard, EdgeVectorParams, PayloadSchemaType, UpdateOperation

    old = EdgeShard.create(
        str(tmp_path / "edge"), EdgeConfig(vectors=EdgeVectorParams(size=384, distance=Distance.Cosine))
    )
    for field in ("tenant", "request_id", "scope"):
        old.update(UpdateOperation.create_field_index(field, PayloadSchemaType.Keyword))
    old.update(UpdateOperation.create_field_index("expires_ms", PayloadSchemaType.Float))
    old.close()
    index = EdgeIndex.open(tmp_path / "edge")
    stored = _unit_vectors(7_000, seed=3)
    await _fill(index, stored, tenants=1)
    await index.sweep(0, max_entries=100_000)
    assert await index.indexed() == (7_000, 7_000)
    found = await index.nearest("t0", "s", stored[42], now_ms=0)
    assert found is not None and found.payload["request_id"] == "r42" and found.similarity == pytest.approx(1.0)
    await index.close()
    # The entries and the index survive a restart, also one with another search pool size.
    reopened = EdgeIndex.open(tmp_path / "edge", search_threads=2)
    assert await reopened.indexed() == (7_000, 7_000)
    await reopened.close()


async def test_entries_embedded_in_another_vector_space_are_never_compared(
    semantic_models: Any, tmp_path: Path
) -> None:
    embedder, verifier = semantic_models
    index = EdgeIndex.open(tmp_path / "edge")
    req = InferenceRequest(
        request_id="r1", tenant="t", messages=[ChatMessage(role="user", content="How do I reset my password?")]
    )
    answer = CachedAnswer(
        request_id="r1", output=Output(text="Settings.", finish_reason="stop"), model=None, usage=Usage(), stored_ms=0
    )
    first = SemanticCache(embedder, index, verifier)
    probe = await first.probe(req)
    assert probe is not None
    await first.store("t", "k", probe, answer, expires_ms=2**52)
    assert await first.lookup(req, probe, now_ms=0) is not None  # the same question in the same space: a hit
    # The same vectors under another space's name (as after a change of embedding backend): never a candidate.
    renamed = Embedder(embedder.embed_many, space=f"{embedder.space}-int8")
    again = await SemanticCache(renamed, index, verifier).probe(req)
    assert again is not None and await first.lookup(req, again, now_ms=0) is None
    renamed.close()
    await index.close()


@pytest.mark.parametrize("backend", ["onnx-int8", "onnx"])
async def test_the_verifier_judges_cosines_of_the_embedders_own_space(backend: Backend, tmp_path: Path) -> None:
    semantic = load_semantic(EdgeIndex.open(tmp_path / "edge"), backend, 1)
    assert semantic.embedder.space == semantic.verifier.space == space_of(backend)  # type: ignore[attr-defined]
    semantic.embedder.close()
    await semantic.close()
