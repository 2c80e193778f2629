"""Time to first token and inter-token gaps: gateway → queue → worker (SSE) vs the same engine called directly.

One engine serves both paths in this process; each level runs both paths ``rounds`` times, alternating which goes
first, with distinct prompts per request (so neither path profits from the other's prefix cache). The queued path is
what a chat application sees: an OpenAI-style ``stream: true`` call to the gateway on uvicorn, through the router
(a ``bypass`` request enters there; with ``with_cache``, through the cache's semantic lookup first, which adds the
embedding) to an in-process worker publishing deltas on core NATS. Time is taken at the client: from sending the
request to the first chunk with text, and between chunks with text; directly, from calling the engine to the first
step that adds whole text, and between such steps (a step ending inside a character adds none in either path).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import httpx
import msgspec
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costwise.cache import CacheSettings
from costwise.cache import build as build_cache
from costwise.catalog import Catalog, default_catalog
from costwise.contracts import ChatMessage, SamplingParams, subjects
from costwise.contracts.subjects import GATEWAY_KEYS
from costwise.gateway import GatewaySettings
from costwise.gateway import build as build_gateway
from costwise.gateway.keys import KeyStore
from costwise.router import RouterSettings
from costwise.router import build as build_router
from costwise.testing import free_port
from costwise.worker import Engine, WorkerSettings
from costwise.worker import build as build_worker
from costwise.worker.engine import Progress

from ._engine_clock import EngineClock
from ._harness import Stack, load_engine, nats_stack, percentile, service_processes

POOL = "ttft"
# The router checks each request's deadline against its pool's speed: the tiny model is far faster than the default's.
FAST_TOKENS_PER_S = 5000.0
Timing = tuple[float, list[float]]
"""Seconds to the first token, and the gaps between later steps/chunks that carried text."""


def _gaps(stamps: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(stamps)]


def _prompt(tag: str) -> str:
    return f"Request {tag}: tell me a long story about a lighthouse keeper and the sea."


async def _direct(engine: Engine | EngineClock, tag: str, max_tokens: int) -> Timing:
    stamps: list[float] = []
    shown = 0

    async def step(progress: Progress) -> None:
        # A step whose text ends inside a character shows nothing yet, here as in the worker's deltas (the random
        # test model emits such byte tokens often): both paths time the steps that add whole text.
        nonlocal shown
        piece = engine.tail(progress, shown)
        if piece and not piece.endswith("\ufffd"):
            stamps.append(time.perf_counter())
            shown = progress.tokens

    started = time.perf_counter()
    messages = [ChatMessage(role="user", content=_prompt(tag))]
    await engine.generate(engine.prompt_ids(messages), SamplingParams(max_tokens=max_tokens), Progress(), on_step=step)
    return stamps[0] - started, _gaps(stamps)


def _via_gateway(http: httpx.AsyncClient, with_cache: bool) -> Callable[[str, int], Awaitable[Timing]]:
    async def one(tag: str, max_tokens: int) -> Timing:
        body: dict[str, Any] = {
            "model": "auto",
            "messages": [{"role": "user", "content": _prompt(tag)}],
            "max_tokens": max_tokens,
            "stream": True,
        }
        if not with_cache:
            body["costwise"] = {"cache": {"mode": "bypass"}}
        stamps: list[float] = []
        started = time.perf_counter()
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if line.startswith("data: {") and _has_text(line):
                    stamps.append(time.perf_counter())
        if not stamps:
            raise RuntimeError(f"request {tag}: the stream carried no text")
        return stamps[0] - started, _gaps(stamps)

    return one


class _Delta(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    delta: _Delta


class _Chunk(msgspec.Struct):
    choices: list[_Choice] = []


def _has_text(line: str) -> bool:
    chunk = msgspec.json.decode(line.removeprefix("data: "), type=_Chunk)
    return any(choice.delta.content for choice in chunk.choices)


async def _batch(one: Callable[[str, int], Awaitable[Timing]], tag: str, streams: int, max_tokens: int) -> list[Timing]:
    """``streams`` requests at once (they share engine steps, as concurrent chats do)."""
    return list(await asyncio.gather(*(one(f"{tag}-{i}", max_tokens) for i in range(streams))))


def _catalog() -> Catalog:
    return default_catalog(POOL, decode_tokens_per_s=FAST_TOKENS_PER_S)


@contextlib.asynccontextmanager
async def _gateway_path(
    stack: Stack, engine: Engine, streams: int, traces: TracerProvider | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    url, nc, tp = stack.url, stack.nc, traces
    worker = WorkerSettings(pool=POOL, max_in_flight=streams, max_model_len=2048)
    services: list[Any] = [
        await build_cache(CacheSettings(nats_url=url, data_dir=str(stack.tmp / "cache")), tracer_provider=tp),
        await build_router(RouterSettings(nats_url=url), catalog=_catalog(), tracer_provider=tp),
        await build_worker(worker, nc=nc, engine=engine, tracer_provider=tp),
    ]
    gateway = await build_gateway(GatewaySettings(nats_url=url), nc=nc, tracer_provider=tp)
    for service in services:
        await service.start()
    serving = await gateway.serve(port=0)
    key = await gateway.gateway.keys.create(POOL)
    headers = {"Authorization": f"Bearer {key.secret}"}
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{serving.port}", headers=headers, timeout=300) as http:
            yield http
    finally:
        await serving.stop()
        for service in reversed(services):
            await service.stop()
        await gateway.stop()


@contextlib.asynccontextmanager
async def _separate_processes(stack: Stack, engine: Engine, streams: int) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway, cache and router as deployed, each in a process of its own; the worker (it holds the engine
    the direct path also calls) and the client stay here."""
    catalog = stack.tmp / "catalog.json"
    catalog.write_bytes(msgspec.json.encode(_catalog()))
    port = free_port()
    env = {
        **os.environ,
        **{f"COSTWISE_{name}_NATS_URL": stack.url for name in ("GATEWAY", "CACHE", "ROUTER")},
        "COSTWISE_ROUTER_CATALOG": str(catalog),
        "COSTWISE_GATEWAY_CATALOG": str(catalog),
        "COSTWISE_GATEWAY_PORT": str(port),
        "COSTWISE_CACHE_DATA_DIR": str(stack.tmp / "cache"),
    }
    settings = WorkerSettings(pool=POOL, max_in_flight=streams, max_model_len=2048)
    worker = await build_worker(settings, nc=stack.nc, engine=engine)
    await worker.start()
    try:
        async with service_processes(env, {"cache": 1, "router": 1, "gateway": 1}):
            key = await KeyStore(await stack.nc.jetstream().key_value(GATEWAY_KEYS.bucket)).create(POOL)
            headers = {"Authorization": f"Bearer {key.secret}"}
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=300) as http:
                await _until_serving(http)
                yield http
    finally:
        await worker.stop()


async def _until_serving(http: httpx.AsyncClient, timeout_s: float = 120.0) -> None:
    """The gateway process answers (its start loads nothing heavy; the cache's models load beside it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if (await http.get("/v1/models")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the gateway did not serve within {timeout_s:g} s")
        await asyncio.sleep(0.2)


def _summary(timings: list[Timing], at_engine: list[tuple[float, float]]) -> dict[str, float]:
    firsts = [first * 1000 for first, _ in timings]
    gaps = [gap * 1000 for _, run in timings for gap in run]
    return {
        "ttft_p50_ms": round(statistics.median(firsts), 2),
        # The first token split at the engine's door: getting there from the batch's send, then the engine's own.
        "reached_engine_p50_ms": round(statistics.median(reached * 1000 for reached, _ in at_engine), 2),
        "engine_ttft_p50_ms": round(statistics.median(first * 1000 for _, first in at_engine), 2),
        "ttft_p99_ms": round(percentile(firsts, 99), 2),
        "gap_p50_ms": round(statistics.median(gaps), 3) if gaps else 0.0,
        # With a model that often ends a step inside a character (the random test model) gaps are one step or
        # several, and the p50 falls on either side by chance: the mean is the steadier comparison.
        "gap_mean_ms": round(statistics.mean(gaps), 3) if gaps else 0.0,
    }


# The queued path's consumers, in the order a request meets them.
_HOPS = (subjects.CACHE_REQUESTS.durable, subjects.ROUTER_ROUTE.durable, subjects.worker_jobs(POOL).durable)


def _hops(spans: InMemorySpanExporter) -> dict[str, dict[str, float]]:
    """Per consumer a request passes: when its span began after the gateway's HTTP span began, and how long it ran
    (p50 over the requests; the worker's runs until the whole answer is generated)."""
    began: dict[int, int] = {}
    seen: dict[str, list[tuple[int, float, float]]] = {}
    for span in spans.get_finished_spans():
        assert span.start_time is not None and span.end_time is not None
        group = (span.attributes or {}).get("messaging.consumer.group.name")
        if span.kind.name == "SERVER":
            began[span.context.trace_id] = span.start_time
        elif group in _HOPS:
            took = (span.end_time - span.start_time) / 1e6
            seen.setdefault(str(group), []).append((span.context.trace_id, span.start_time / 1e6, took))
    return {
        hop: {
            "began_ms": round(statistics.median(start - began[trace] / 1e6 for trace, start, _ in seen[hop]), 2),
            "took_ms": round(statistics.median(took for _, _, took in seen[hop]), 2),
        }
        for hop in _HOPS
        if hop in seen
    }


async def _level(
    engine: EngineClock, gateway: Callable[[str, int], Awaitable[Timing]], streams: int, rounds: int, max_tokens: int
) -> dict[str, Any]:
    timings: dict[str, list[Timing]] = {"direct": [], "gateway": []}
    at_engine: dict[str, list[tuple[float, float]]] = {"direct": [], "gateway": []}
    for r in range(rounds):
        for path in ("gateway", "direct") if r % 2 else ("direct", "gateway"):
            one = gateway if path == "gateway" else (lambda tag, n: _direct(engine, tag, n))
            engine.start_batch()
            timings[path] += await _batch(one, f"{path}-s{streams}-r{r}", streams, max_tokens)
            at_engine[path] += engine.samples()
    direct = _summary(timings["direct"], at_engine["direct"])
    queued = _summary(timings["gateway"], at_engine["gateway"])
    return {
        "streams": streams,
        "requests_per_path": len(timings["direct"]),
        "direct": direct,
        "gateway": queued,
        "added_ttft_p50_ms": round(queued["ttft_p50_ms"] - direct["ttft_p50_ms"], 2),
        "gap_p50_ratio": round(queued["gap_p50_ms"] / direct["gap_p50_ms"], 3) if direct["gap_p50_ms"] else None,
        "gap_mean_ratio": round(queued["gap_mean_ms"] / direct["gap_mean_ms"], 3) if direct["gap_mean_ms"] else None,
    }


async def measure(
    engine: Engine,
    levels: list[int],
    rounds: int,
    max_tokens: int,
    with_cache: bool,
    processes: bool = False,
    hops: bool = False,
) -> list[dict[str, Any]]:
    """One row per level (streams at once): ``rounds`` alternating rounds of each path on ``engine``.

    With ``hops`` (services in this process only) they trace into memory and each row gains ``hops_p50_ms``: where
    the queued path's time goes before the engine. Tracing takes time of its own: compare such runs with each
    other, not with runs without it."""
    clock = EngineClock(engine)  # both paths call it: the worker holds it, the direct path calls it
    spans = InMemorySpanExporter() if hops and not processes else None
    async with nats_stack() as stack:
        served, streams = cast(Engine, clock), max(levels)
        path = (
            _separate_processes(stack, served, streams)
            if processes
            else _gateway_path(stack, served, streams, _tracing(spans))
        )
        async with path as http:
            gateway = _via_gateway(http, with_cache)
            await _batch(gateway, "warm-gateway", 2, 8)  # first-request costs (compilation, connections) are not TTFT
            await _batch(lambda tag, n: _direct(clock, tag, n), "warm-direct", 2, 8)
            rows = []
            for level in levels:
                if spans is not None:
                    spans.clear()
                rows.append(await _level(clock, gateway, level, rounds, max_tokens))
                if spans is not None:
                    rows[-1]["hops_p50_ms"] = _hops(spans)
            return rows


def _tracing(spans: InMemorySpanExporter | None) -> TracerProvider | None:
    if spans is None:
        return None
    traces = TracerProvider()
    traces.add_span_processor(SimpleSpanProcessor(spans))
    return traces


async def run(
    model: str,
    levels: list[int],
    rounds: int,
    max_tokens: int,
    with_cache: bool,
    processes: bool = False,
    hops: bool = False,
) -> dict[str, Any]:
    """Per level (streams at once), ``rounds`` alternating rounds of each path; p50/p99 over all their requests.
    With ``processes`` the gateway, cache and router run in processes of their own, as deployed; with ``hops``
    (not with ``processes``) each row says when each consumer took a request and how long it kept it."""
    if hops and processes:
        raise ValueError("--hops needs the services in this process (it reads their spans): drop --processes")
    engine = await load_engine(model, max(levels))
    try:
        rows = await measure(engine, levels, rounds, max_tokens, with_cache, processes, hops)
    finally:
        engine.shutdown()
    return {
        "benchmark": "ttft",
        "model": model,
        "max_tokens": max_tokens,
        "queue_path": "gateway (SSE) → " + ("cache (semantic lookup) → " if with_cache else "") + "router → worker",
        "services": "gateway, cache, router: a process each" if processes else "one process",
        "rounds": rounds,
        "rows": rows,
    }
