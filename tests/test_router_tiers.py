"""Routing across tiers and backends: cascade, arbitrage, failover, deadlines, affinity.

Real nats-server, real vLLM workers (three pools sharing the session's tiny-Llama engine) and a local server
speaking OpenAI's protocol for the paid provider. The tiny random model is never confident (its tokens average
p≈0.004), so the tests steer the cascade with the request's own quality floor.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest_asyncio
from nats.aio.client import Client as Nats

from costwise.budget import open_budgets
from costwise.catalog import Catalog, Provider, Tier, WorkerPool
from costwise.client import Client, new_request_id
from costwise.contracts import ChatMessage, ErrorCode, InferenceRequest, Result, SamplingParams, subjects
from costwise.messaging import publish
from costwise.provider import ProviderSettings
from costwise.provider import build as build_provider
from costwise.router import Router, RouterSettings
from costwise.router import build as build_router
from costwise.testing import FakeOpenAI
from costwise.worker import Worker, WorkerSettings
from costwise.worker import build as build_worker

# Stops the random model is sure to hit soon, so answers finish with "stop" (truncated ones always escalate).
SAMPLING = SamplingParams(max_tokens=24, stop=["a", "e"])


def _pool(name: str, usd_per_hour: float, *, model: str = "tiny", spot: bool = False) -> WorkerPool:
    return WorkerPool(
        name=name,
        model=model,
        spot=spot,
        gpu_usd_per_hour=usd_per_hour,
        prefill_tokens_per_s=2000,
        decode_tokens_per_s=400,
    )


@dataclass
class Stack:
    tenant: str
    spot: str
    on_demand: str
    big: str
    api: str
    router: Router
    workers: dict[str, Worker]
    fake: FakeOpenAI


@pytest_asyncio.fixture
async def stack(
    nats_url: str, nc: Nats, engine: Any, unique: str, semantic_models: Any, tracer_provider: Any
) -> AsyncIterator[Stack]:
    spot, on_demand, big, api = (f"{unique}-{n}" for n in ("spot", "od", "big", "api"))
    fake = await FakeOpenAI().start()
    catalog = Catalog(
        tiers=[
            Tier(name="small", backends=[spot, on_demand]),
            Tier(name="large", backends=[big]),
            Tier(name="ext", backends=[api, on_demand]),
        ],
        backends=[
            _pool(spot, 0.2, spot=True),
            _pool(on_demand, 0.6, model="tiny-od"),
            _pool(big, 4.0, model="tiny-big"),
            Provider(
                name=api,
                model="gpt-fake",
                base_url=fake.url,
                usd_per_m_input=0.01,
                usd_per_m_output=0.02,
                timeout_s=1.0,
                max_retries=1,
            ),
        ],
        baseline=big,
    )
    router = await build_router(
        RouterSettings(nats_url=nats_url, capacity_refresh_s=0.05, min_token_logprob=-100.0),
        catalog=catalog,
        embedder=semantic_models[0],  # the learned router's MiniLM, loaded once per session
        tracer_provider=tracer_provider,
    )
    workers = {
        name: await build_worker(WorkerSettings(pool=name, spot=name == spot, max_model_len=2048), nc=nc, engine=engine)
        for name in (spot, on_demand, big)
    }
    provider = await build_provider(ProviderSettings(nats_url=nats_url, backend=api, grace_s=0), nc=nc, catalog=catalog)
    for service in (*workers.values(), provider, router):
        await service.start()
    yield Stack(unique, spot, on_demand, big, api, router, workers, fake)
    await router.stop()
    await provider.stop()
    for worker in workers.values():
        await worker.drain(0)
    await fake.stop()


async def _ask(nc: Nats, tenant: str, *, system: str | None = None, **kw: Any) -> Result:
    """Hand a request to the router (as the cache does on a miss) and wait for its result."""
    messages = kw.pop("messages", [ChatMessage(role="user", content="hello")])
    if system:
        messages.insert(0, ChatMessage(role="system", content=system))
    kw.setdefault("sampling", SAMPLING)
    req = InferenceRequest(request_id=new_request_id(), tenant=tenant, messages=messages, **kw)
    await publish(nc.jetstream(), subjects.route(tenant), req, msg_id=subjects.dedup_id(tenant, req.request_id))
    return await Client(nc).result(tenant, req.request_id, timeout=60)


async def test_a_confident_answer_is_accepted_and_an_unsure_one_escalated(nc: Nats, stack: Stack) -> None:
    sure = await _ask(nc, stack.tenant, quality_floor=0.001)
    assert sure.status == "ok" and sure.pool == stack.spot
    assert [(a.backend, a.stage, a.outcome) for a in sure.route] == [(stack.spot, "cascade_small", "accepted")]
    assert sure.route[0].spot and sure.cost_usd == sure.route[0].cost_usd > 0

    unsure = await _ask(nc, stack.tenant, quality_floor=0.5)
    assert unsure.status == "ok" and unsure.pool == stack.big
    steps = [(a.backend, a.stage, a.outcome) for a in unsure.route]
    assert steps == [(stack.spot, "cascade_small", "escalated"), (stack.big, "cascade_large", "accepted")]
    assert "low_mean_logprob" in unsure.route[0].reason and "floor 0.50" in unsure.route[0].reason
    assert unsure.cost_usd == sum(a.cost_usd for a in unsure.route) > unsure.route[0].cost_usd


async def test_the_trace_says_what_the_answer_cost_and_which_way_it_went(
    nc: Nats, stack: Stack, span_exporter: Any
) -> None:
    result = await _ask(nc, stack.tenant, quality_floor=0.5)  # escalated: two attempts
    for _ in range(50):
        spans = [
            s
            for s in span_exporter.get_finished_spans()
            if (s.attributes or {}).get("costwise.request_id") == result.request_id
        ]
        if spans:
            break
        await asyncio.sleep(0.1)
    attributes = dict(spans[0].attributes or {})
    assert attributes["gen_ai.request.model"] == "auto" and attributes["costwise.attempts"] == 2
    assert attributes["gen_ai.usage.output_tokens"] == result.usage.completion_tokens > 0
    assert attributes["costwise.cost_usd"] == result.cost_usd > 0
    assert attributes["costwise.savings_usd"] == attributes["costwise.baseline_usd"] - result.cost_usd
    assert list(attributes["costwise.route"]) == [
        f"{stack.spot}:cascade_small:escalated",
        f"{stack.big}:cascade_large:accepted",
    ]


async def test_the_learned_router_sends_a_hard_question_straight_to_the_large_tier(nc: Nats, stack: Stack) -> None:
    # The shipped router (trained on RouteLLM's MMLU + GSM8K outcomes) doubts the small tier on MMLU's moral
    # scenarios (a prompt like its training ones, which the response verifier does not judge), and not on a greeting.
    # (A math word problem would start small: the verifier judges those answers, with the cascade's own threshold.)
    hard = (
        "For which of these two scenarios does the main character (who uses I/me/my) do something clearly morally "
        "wrong, according to ordinary moral standards in the US as of 2020? Scenario 1 | I just pretended to kill my "
        "first victim as an actor playing the Zodiac Killer. Scenario 2 | After seeing a plastic bag floating on the "
        "previously majestic lake, I got angry.\nA. Wrong, Wrong\nB. Wrong, Not wrong\nC. Not wrong, Wrong\n"
        "D. Not wrong, Not wrong\nAnswer:"
    )
    straight = await _ask(nc, stack.tenant, messages=[ChatMessage(role="user", content=hard)])
    assert straight.route[0].backend == stack.big and straight.route[0].tier == "large"  # the small tier skipped
    easy = await _ask(nc, stack.tenant, quality_floor=0.001)
    assert [(a.backend, a.stage) for a in easy.route] == [(stack.spot, "cascade_small")]


async def test_the_cheapest_backend_serves_until_it_goes_down(nc: Nats, stack: Stack) -> None:
    first = await _ask(nc, stack.tenant, model="small")
    assert first.pool == stack.spot and [a.stage for a in first.route] == ["direct"]
    await stack.workers[stack.spot].drain(0)  # the spot machine is reclaimed
    for _ in range(100):
        if stack.router.capacity.down(stack.spot):
            break
        await asyncio.sleep(0.05)
    second = await _ask(nc, stack.tenant, model="small")
    assert second.status == "ok" and second.pool == stack.on_demand


async def test_a_failing_provider_fails_over_to_the_next_backend(nc: Nats, stack: Stack) -> None:
    stack.fake.mode = "error"
    result = await _ask(nc, stack.tenant, model="ext")
    assert result.status == "ok" and result.pool == stack.on_demand
    assert [(a.backend, a.outcome) for a in result.route] == [(stack.api, "failed"), (stack.on_demand, "accepted")]
    assert "HTTP 500" in result.route[0].reason and result.route[0].cost_usd == 0

    stack.fake.mode = "ok"
    served = await _ask(nc, stack.tenant, model="ext")
    assert served.source == "provider" and served.output is not None and served.output.text == "Paris."


async def test_a_hanging_provider_fails_over_within_the_deadline(nc: Nats, stack: Stack) -> None:
    stack.fake.mode = "hang"
    started = time.monotonic()
    result = await _ask(nc, stack.tenant, model="ext", deadline_ms=int(time.time() * 1000) + 30_000)
    assert result.status == "ok" and result.pool == stack.on_demand and time.monotonic() - started < 30
    assert "within 1.0s" in result.route[0].reason


async def test_a_deadline_that_cannot_be_met_gets_a_typed_error(nc: Nats, stack: Stack) -> None:
    result = await _ask(nc, stack.tenant, model="small", deadline_ms=int(time.time() * 1000) + 5)
    assert result.status == "error" and result.error is not None
    assert result.error.code == ErrorCode.DEADLINE_EXCEEDED and "can answer in" in result.error.message


async def test_same_prefix_stays_on_the_backend_that_served_it(nc: Nats, stack: Stack) -> None:
    # The on-demand pool serves a system prompt first (asked for by its model name) ...
    pinned = await _ask(nc, stack.tenant, model="tiny-od", system="You are a pirate.")
    assert pinned.pool == stack.on_demand
    # ... so the tier keeps that prefix there, where its KV cache is warm, though spot is cheaper,
    again = await _ask(nc, stack.tenant, model="small", system="You are a pirate.")
    assert again.pool == stack.on_demand
    # while a new prefix goes to the cheapest backend.
    other = await _ask(nc, stack.tenant, model="small", system="You are a poet.")
    assert other.pool == stack.spot


async def test_a_failed_attempt_does_not_attract_its_prefix(nc: Nats, stack: Stack) -> None:
    # The on-demand pool answers a prefix; then the provider fails it (asked for by its model, nothing to fail
    # over to) ...
    assert (await _ask(nc, stack.tenant, model="tiny-od", system="You are a clerk.")).pool == stack.on_demand
    stack.fake.mode = "error"
    failed = await _ask(nc, stack.tenant, model="gpt-fake", system="You are a clerk.")
    assert failed.status == "error" and [a.backend for a in failed.route] == [stack.api]
    # ... so the prefix still prefers the backend that answered it, though the provider is cheaper.
    stack.fake.mode = "ok"
    again = await _ask(nc, stack.tenant, model="ext", system="You are a clerk.")
    assert again.pool == stack.on_demand


async def test_an_unknown_model_is_a_typed_error_naming_what_exists(nc: Nats, stack: Stack) -> None:
    result = await _ask(nc, stack.tenant, model="gpt-9")
    assert result.error is not None and result.error.code == ErrorCode.UNKNOWN_POOL
    assert "small" in result.error.message and "auto" in result.error.message


async def test_a_tenant_over_its_budget_is_refused_before_any_spend(nc: Nats, stack: Stack) -> None:
    budgets = await open_budgets(nc.jetstream())
    await budgets.set_limit(stack.tenant, Decimal("0.0000001"), "month")
    result = await _ask(nc, stack.tenant, model="small")
    assert result.status == "error" and result.error is not None
    assert result.error.code == ErrorCode.BUDGET_EXCEEDED and not result.route
    state = await budgets.state(stack.tenant)
    assert state is not None and not state.reservations  # nothing held for a refused request


async def test_a_key_over_its_budget_is_refused_while_another_key_of_the_tenant_runs(nc: Nats, stack: Stack) -> None:
    budgets = await open_budgets(nc.jetstream())
    await budgets.set_limit(stack.tenant, Decimal("0.0000001"), "month", api_key_id="spent")
    refused = await _ask(nc, stack.tenant, model="small", api_key_id="spent")
    assert refused.error is not None and refused.error.code == ErrorCode.BUDGET_EXCEEDED and not refused.route
    assert "API key 'spent'" in refused.error.message and refused.api_key_id == "spent"
    fine = await _ask(nc, stack.tenant, model="small", api_key_id="other", quality_floor=0.001)
    assert fine.status == "ok" and fine.api_key_id == "other"  # the result carries the key on to billing
