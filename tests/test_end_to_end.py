"""Publish → cache → router → vLLM worker → router → result, on a real nats-server and real vLLM."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from nats.aio.client import Client as Nats
from nats.js import JetStreamContext

from costwise.cache import CacheSettings
from costwise.cache import build as build_cache
from costwise.catalog import default_catalog
from costwise.client import Client, new_request_id
from costwise.contracts import ChatMessage, InferenceRequest, Result, SamplingParams, subjects
from costwise.router import RouterSettings
from costwise.router import build as build_router
from costwise.testing import span_names
from costwise.worker import WorkerSettings
from costwise.worker import build as build_worker


@pytest_asyncio.fixture
async def stack(
    nats_url: str, nc: Nats, engine: Any, unique: str, tracer_provider: Any, semantic_cache: Any
) -> AsyncIterator[str]:
    """Cache + router + one worker for a pool (and tenant) unique to this test; yields the tenant."""
    settings = CacheSettings(nats_url=nats_url)
    cache = await build_cache(settings, tracer_provider=tracer_provider, semantic=semantic_cache)
    router = await build_router(
        RouterSettings(nats_url=nats_url), catalog=default_catalog(unique), tracer_provider=tracer_provider
    )
    worker = await build_worker(
        WorkerSettings(pool=unique, max_model_len=2048), nc=nc, engine=engine, tracer_provider=tracer_provider
    )
    for service in (cache, router, worker):
        await service.start()
    yield unique
    await worker.drain(0)
    await router.stop()
    await cache.stop()


async def test_round_trip_through_the_queue(nc: Nats, stack: str) -> None:
    client = Client(nc)
    rid = await client.publish(tenant=stack, prompt="What is 2+2?", max_tokens=8)
    result = await client.result(stack, rid, timeout=60)
    assert result.status == "ok" and result.output is not None and result.output.text
    assert result.source == "engine" and result.pool == stack and result.usage.completion_tokens <= 8


async def test_duplicate_publish_yields_one_job_and_one_result(nc: Nats, js: JetStreamContext, stack: str) -> None:
    client = Client(nc)
    req = InferenceRequest(
        request_id="dup",
        tenant=stack,
        messages=[ChatMessage(role="user", content="hi")],
        sampling=SamplingParams(max_tokens=4),
    )
    for _ in range(3):
        await client.publish(req)
    await client.result(stack, "dup", timeout=60)
    requests = await js.stream_info(subjects.REQUESTS.name, subjects_filter=subjects.requests(stack))
    results = await js.stream_info(subjects.RESULTS.name, subjects_filter=subjects.tenant_results(stack))
    completions = await js.stream_info(subjects.COMPLETIONS.name, subjects_filter=subjects.completions(stack))
    assert requests.state.subjects == {subjects.requests(stack): 1}
    assert results.state.subjects == {subjects.results(stack, "dup"): 1}
    assert completions.state.subjects == {subjects.completions(stack): 1}


async def test_one_trace_spans_publish_router_worker_and_result(
    nc: Nats, stack: str, tracer_provider: Any, span_exporter: Any
) -> None:
    with tracer_provider.get_tracer("test").start_as_current_span("client") as root:
        rid = await Client(nc).publish(tenant=stack, prompt="trace", max_tokens=4)
    await Client(nc).result(stack, rid, timeout=60)
    completion_seen = lambda names: any(n.startswith(subjects.completions("")) for n in names)  # noqa: E731
    names = await span_names(span_exporter, root.get_span_context().trace_id, until=completion_seen)
    assert "worker.job" in names
    assert any(n.startswith(subjects.requests("")) for n in names)  # router consumed the request
    assert any(n.startswith(subjects.completions("")) for n in names)  # router consumed the completion


async def test_a_repeated_question_is_answered_by_the_cache(nc: Nats, stack: str) -> None:
    client = Client(nc)

    # Truncated answers are never cached, and the random tiny model never ends on its own: stop strings it
    # is sure to produce make the answer complete.
    sampling = SamplingParams(max_tokens=64, stop=["a", "e", "o", " "])

    async def ask() -> Result:
        question = [ChatMessage(role="user", content="A colour?")]
        req = InferenceRequest(request_id=new_request_id(), tenant=stack, messages=question, sampling=sampling)
        return await client.result(stack, await client.publish(req), timeout=60)

    first = await ask()
    assert first.output is not None and first.output.finish_reason == "stop"
    # The cache stores the answer when it consumes the result, a moment after the client got it; a question asked
    # while it does may miss the exact store and find the semantic index already written (the same answer).
    sources = []
    for _ in range(20):
        again = await ask()
        sources.append(again.source)
        if again.source == "cache_exact":
            break
        await asyncio.sleep(0.2)
    assert first.source == "engine" and again.source == "cache_exact", sources
    assert set(sources) <= {"engine", "cache_semantic", "cache_exact"}
    assert again.output == first.output and again.cache is not None
    assert again.cache.saved == first.usage and again.usage.completion_tokens == 0


async def test_two_tenants_may_use_the_same_request_id(nc: Nats, stack: str) -> None:
    client, other = Client(nc), f"{stack}b"
    for tenant in (stack, other):
        await client.publish(tenant=tenant, prompt="same id", request_id="shared-id", max_tokens=2)
    for tenant in (stack, other):
        result = await client.result(tenant, "shared-id", timeout=60)
        assert result.status == "ok" and result.tenant == tenant
