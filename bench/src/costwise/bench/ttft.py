"""Time to first token and inter-token gaps: gateway → queue → worker (SSE) vs the same engine called directly.

One engine serves both paths in this process; each level runs both paths ``rounds`` times, alternating which goes
first, with distinct prompts per request (so neither path profits from the other's prefix cache). The queued path is
what a chat application sees: an OpenAI-style ``stream: true`` call to the gateway on uvicorn, through the router
(a ``bypass`` request enters there; with ``with_cache``, through the cache's semantic lookup first, which adds the
embedding) to an in-process worker publishing deltas on core NATS. Time is taken at the client, a process of its
own (``_sse_client``) as an application's is: from sending the request to the first chunk with text, and between
chunks with text; directly, from calling the engine to the first step that adds whole text, and between such steps
(a step ending inside a character adds none in either path).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
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

from ._cores import ENGINE_CORE, bind_engine_env, engine_core
from ._engine_clock import EngineClock
from ._harness import Stack, load_engine, nats_stack, percentile, service_processes
from ._sse_client import KEY_ENV, Batch, Sample, Stream, Timed, gaps, prompt, run_batch

POOL = "ttft"
# The router checks each request's deadline against its pool's speed: the tiny model is far faster than the default's.
FAST_TOKENS_PER_S = 5000.0
SPREAD_TURNS = 3
"""Questions each chat asks in turn when arrivals are spread."""


async def _direct(engine: EngineClock, tag: str, max_tokens: int) -> Sample:
    stamps: list[float] = []
    shown = 0

    async def step(progress: Progress) -> None:
        # A step whose text ends inside a character shows nothing yet, here as in the worker's deltas (the random
        # test model emits such byte tokens often): both paths time the steps that add whole text.
        nonlocal shown
        piece = engine.tail(progress, shown)
        if piece and not piece.endswith("\ufffd"):
            stamps.append(time.monotonic())
            shown = progress.tokens

    sent = time.monotonic()
    messages = [ChatMessage(role="user", content=prompt(tag))]
    params = SamplingParams(max_tokens=max_tokens)
    # No logprobs, as the worker asks for none for the queued path's jobs: a single tier, so no cascade judges them.
    await engine.generate(engine.prompt_ids(messages), params, Progress(), on_step=step, logprobs=False)
    return Sample(tag, sent, stamps[0] - sent, gaps(stamps))


def _plan(tag: str, streams: int, max_tokens: int, spread_s: float, rng: random.Random, with_cache: bool) -> Batch:
    """``streams`` chats. A burst (``spread_s`` 0): all ask one question of ``max_tokens`` at the same instant. Spread:
    each starts at a random point of the first ``spread_s`` seconds and asks :data:`SPREAD_TURNS` questions in turn,
    of a random length around ``max_tokens`` — concurrent chats at steady state, whose questions seldom coincide."""
    if not spread_s:
        return Batch(tag, [Stream(0.0, [max_tokens]) for _ in range(streams)], with_cache)
    lengths = range(max(1, max_tokens // 2), max_tokens * 3 // 2 + 1)
    return Batch(
        tag,
        [Stream(rng.uniform(0, spread_s), [rng.choice(lengths) for _ in range(SPREAD_TURNS)]) for _ in range(streams)],
        with_cache,
    )


class _ClientProcess:
    """The chat client (``_sse_client``) in a process of its own; :meth:`run` sends it a batch and reads its samples."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc

    async def run(self, batch: Batch) -> list[Sample]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(msgspec.json.encode(batch) + b"\n")
        await self._proc.stdin.drain()
        line = await self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the benchmark's client process exited ({await self._proc.wait()}): see its stderr")
        return msgspec.json.decode(line, type=Timed).samples


@contextlib.asynccontextmanager
async def _client_process(base_url: str, key: str) -> AsyncIterator[_ClientProcess]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "costwise.bench._sse_client",
        base_url,
        env={**os.environ, KEY_ENV: key},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        yield _ClientProcess(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


def _catalog() -> Catalog:
    return default_catalog(POOL, decode_tokens_per_s=FAST_TOKENS_PER_S)


@contextlib.asynccontextmanager
async def _gateway_path(
    stack: Stack, engine: Engine, streams: int, traces: TracerProvider | None = None
) -> AsyncIterator[tuple[str, str]]:
    """The services in this process; yields the gateway's URL and a key for it."""
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
    try:
        yield f"http://127.0.0.1:{serving.port}", key.secret
    finally:
        await serving.stop()
        for service in reversed(services):
            await service.stop()
        await gateway.stop()


@contextlib.asynccontextmanager
async def _separate_processes(stack: Stack, engine: Engine, streams: int) -> AsyncIterator[tuple[str, str]]:
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
            base_url = f"http://127.0.0.1:{port}"
            await _until_serving(base_url, key.secret)
            yield base_url, key.secret
    finally:
        await worker.stop()


async def _until_serving(base_url: str, key: str, timeout_s: float = 120.0) -> None:
    """The gateway process answers (its start loads nothing heavy; the cache's models load beside it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {key}"}) as http:
                if (await http.get("/v1/models")).status_code == 200:
                    return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the gateway did not serve within {timeout_s:g} s")
        await asyncio.sleep(0.2)


def _summary(samples: list[Sample], at_engine: list[tuple[float, float]]) -> dict[str, float]:
    firsts = [sample.first_s * 1000 for sample in samples]
    steps = [gap * 1000 for sample in samples for gap in sample.gaps_s]
    return {
        "ttft_p50_ms": round(statistics.median(firsts), 2),
        # The first token split at the engine's door: getting there from the request's send, then the engine's own.
        "reached_engine_p50_ms": round(statistics.median(reached * 1000 for reached, _ in at_engine), 2),
        "engine_ttft_p50_ms": round(statistics.median(first * 1000 for _, first in at_engine), 2),
        "ttft_p99_ms": round(percentile(firsts, 99), 2),
        "gap_p50_ms": round(statistics.median(steps), 3) if steps else 0.0,
        # With a model that often ends a step inside a character (the random test model) gaps are one step or
        # several, and the p50 falls on either side by chance: the mean is the steadier comparison.
        "gap_mean_ms": round(statistics.mean(steps), 3) if steps else 0.0,
    }


def _at_engine(engine: EngineClock, samples: list[Sample]) -> list[tuple[float, float]]:
    """Per request: from its send to the engine's call, and from the call to its first step there."""
    split = []
    for sample in samples:
        seen = engine.at_engine([ChatMessage(role="user", content=prompt(sample.tag))])
        if seen is None:
            raise RuntimeError(f"request {sample.tag} streamed text but never reached the engine")
        reached, first = seen
        split.append((reached - sample.sent, first - reached))
    return split


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
    engine: EngineClock, client: _ClientProcess, streams: int, plan: Callable[[str, int], Batch], rounds: int
) -> dict[str, Any]:
    samples: dict[str, list[Sample]] = {"direct": [], "gateway": []}
    at_engine: dict[str, list[tuple[float, float]]] = {"direct": [], "gateway": []}
    for r in range(rounds):
        batch = plan(f"s{streams}-r{r}", streams)  # both paths run the same plan, each with prompts of its own
        for path in ("gateway", "direct") if r % 2 else ("direct", "gateway"):
            ours = msgspec.structs.replace(batch, tag=f"{path}-{batch.tag}")
            got = (
                await client.run(ours)
                if path == "gateway"
                else await run_batch(ours, functools.partial(_direct, engine))
            )
            samples[path] += got
            at_engine[path] += _at_engine(engine, got)
    direct = _summary(samples["direct"], at_engine["direct"])
    queued = _summary(samples["gateway"], at_engine["gateway"])
    return {
        "streams": streams,
        "requests_per_path": len(samples["direct"]),
        "direct": direct,
        "gateway": queued,
        "added_ttft_p50_ms": round(queued["ttft_p50_ms"] - direct["ttft_p50_ms"], 2),
        "gap_p50_ratio": round(queued["gap_p50_ms"] / direct["gap_p50_ms"], 3) if direct["gap_p50_ms"] else None,
        "gap_mean_ratio": round(queued["gap_mean_ms"] / direct["gap_mean_ms"], 3) if direct["gap_mean_ms"] else None,
    }


@dataclass(frozen=True)
class Options:
    """What one run measures (``costwise-bench ttft``'s flags).

    ``levels``: streams at once, a row each; ``rounds`` alternating rounds of each path per level, each a burst or,
    with ``spread_s``, chats starting at random within that many seconds (:func:`_plan`). With ``processes`` the
    gateway, cache and router run in processes of their own, as deployed. With ``hops`` (services in this process
    only) they trace into memory and each row gains ``hops_p50_ms``: when each consumer took a request and how long
    it kept it (tracing takes time of its own: compare such runs with each other). With ``own_core`` vLLM gets a
    core to itself (:mod:`._cores`)."""

    levels: tuple[int, ...]
    rounds: int = 6
    max_tokens: int = 64
    with_cache: bool = False
    processes: bool = False
    hops: bool = False
    spread_s: float = 0.0
    own_core: bool = False


async def measure(engine: Engine, opts: Options) -> list[dict[str, Any]]:
    """One row per level of ``opts``, both paths on ``engine`` (``opts.own_core`` is :func:`run`'s to apply)."""
    clock = EngineClock(engine)  # both paths call it: the worker holds it, the direct path calls it
    spans = InMemorySpanExporter() if opts.hops and not opts.processes else None
    async with nats_stack() as stack:
        served, streams = cast(Engine, clock), max(opts.levels)
        path = (
            _separate_processes(stack, served, streams)
            if opts.processes
            else _gateway_path(stack, served, streams, _tracing(spans))
        )
        rng, cache = random.Random(0), opts.with_cache
        plan = functools.partial(_plan, max_tokens=opts.max_tokens, spread_s=opts.spread_s, rng=rng, with_cache=cache)
        async with path as (base_url, key), _client_process(base_url, key) as client:
            # First-request costs (compilation, connections) are not TTFT.
            await client.run(_plan("warm-gateway", 2, 8, 0.0, rng, cache))
            await run_batch(_plan("warm-direct", 2, 8, 0.0, rng, cache), functools.partial(_direct, clock))
            rows = []
            for level in opts.levels:
                if spans is not None:
                    spans.clear()
                rows.append(await _level(clock, client, level, plan, opts.rounds))
                if spans is not None:
                    rows[-1]["hops_p50_ms"] = _hops(spans)
            return rows


def _tracing(spans: InMemorySpanExporter | None) -> TracerProvider | None:
    if spans is None:
        return None
    traces = TracerProvider()
    traces.add_span_processor(SimpleSpanProcessor(spans))
    return traces


async def run(model: str, opts: Options) -> dict[str, Any]:
    """Per level (streams at once), ``opts.rounds`` alternating rounds of each path; p50/p99 over all their
    requests (:class:`Options` says what each choice does)."""
    if opts.hops and opts.processes:
        raise ValueError("--hops needs the services in this process (it reads their spans): drop --processes")
    if opts.own_core:
        bind_engine_env()
    engine = await load_engine(model, max(opts.levels))
    cores = f"vLLM on core {ENGINE_CORE}, all else on {sorted(engine_core())}" if opts.own_core else "shared"
    try:
        rows = await measure(engine, opts)
    finally:
        engine.shutdown()
    spread, via_cache = opts.spread_s, "cache (semantic lookup) → " if opts.with_cache else ""
    return {
        "benchmark": "ttft",
        "model": model,
        "max_tokens": opts.max_tokens,
        "queue_path": f"gateway (SSE) → {via_cache}router → worker",
        "services": "gateway, cache, router: a process each" if opts.processes else "one process",
        "rounds": opts.rounds,
        "cores": cores,
        "arrivals": f"chats spread over {spread:g} s, {SPREAD_TURNS} questions each" if spread else "burst",
        "rows": rows,
    }
