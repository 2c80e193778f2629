"""The learned router's per-tenant corrections outlive the router that learned them (KV ``ROUTER_HEADS``)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from nats.aio.client import Client as Nats
from nats.js.errors import KeyNotFoundError

from costwise.catalog import Catalog, Tier, WorkerPool
from costwise.contracts import ChatMessage, InferenceRequest
from costwise.contracts.subjects import ROUTER_HEADS
from costwise.router import Router, RouterSettings, build


def _catalog(name: str) -> Catalog:
    pools = [
        WorkerPool(
            name=f"{name}-{size}", model=size, gpu_usd_per_hour=usd, prefill_tokens_per_s=1, decode_tokens_per_s=1
        )
        for size, usd in (("small", 0.1), ("large", 1.0))
    ]
    tiers = [Tier(name="small", backends=[pools[0].name]), Tier(name="large", backends=[pools[1].name])]
    return Catalog(tiers=tiers, backends=pools, baseline=pools[1].name)


async def _router(nats_url: str, unique: str, semantic_models: Any, flush_s: float = 0.2) -> Router:
    settings = RouterSettings(nats_url=nats_url, heads_flush_s=flush_s)
    router = await build(settings, catalog=_catalog(unique), embedder=semantic_models[0])
    await router.start()
    return router


def _req(tenant: str, prompt: str) -> InferenceRequest:
    return InferenceRequest(request_id="r1", tenant=tenant, messages=[ChatMessage(role="user", content=prompt)])


async def test_a_second_router_starts_from_what_the_first_one_learned(
    nc: Nats, nats_url: str, unique: str, semantic_models: Any
) -> None:
    first = await _router(nats_url, unique, semantic_models, flush_s=60)
    kv = await nc.jetstream().key_value(ROUTER_HEADS.bucket)
    question = _req(unique, "What is the capital of France?")
    try:
        assert first.odds is not None
        shipped = await first.odds.p_small_ok(question)
        for _ in range(30):  # the small tier kept failing this tenant
            await first.odds.learn(question, small_ok=False)
        learned = await first.odds.p_small_ok(question)
        assert learned < shipped - 0.05
        with pytest.raises(KeyNotFoundError):  # debounced: not written on every verdict
            await kv.get(unique)
    finally:
        await first.stop()  # ... but written at the latest when the router stops
    assert len((await kv.get(unique)).value or b"") < 8 << 10  # compact: msgpack floats, no arrays file

    second = await _router(nats_url, unique, semantic_models)
    try:
        assert second.odds is not None
        assert await second.odds.p_small_ok(question) == pytest.approx(learned)
        other = _req(f"{unique}o", question.messages[0].content)
        assert await second.odds.p_small_ok(other) == pytest.approx(shipped)
        await second.odds.learn(other, small_ok=True)  # and written within the flush interval while running
        for _ in range(100):
            with contextlib.suppress(KeyNotFoundError):
                if await kv.get(other.tenant):
                    break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the second router never stored what it learned")
    finally:
        await second.stop()


async def test_a_damaged_stored_head_is_ignored(nc: Nats, nats_url: str, unique: str, semantic_models: Any) -> None:
    kv = await nc.jetstream().key_value(ROUTER_HEADS.bucket)
    await kv.put(unique, b"\x93not a head")
    router = await _router(nats_url, unique, semantic_models)
    try:
        assert router.odds is not None
        question = _req(unique, "What is 2 + 2?")
        assert await router.odds.p_small_ok(question) == pytest.approx(
            await router.odds.p_small_ok(_req(f"{unique}o", "What is 2 + 2?"))
        )
    finally:
        await router.stop()
