"""A throwaway embedded stack for one benchmark run: nats-server in a temp dir, one engine, in-process services."""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nats.aio.client import Client as Nats
from nats.js import JetStreamContext

from costwise.cache import CacheSettings
from costwise.cache import build as build_cache
from costwise.catalog import default_catalog
from costwise.client import Client
from costwise.contracts import InferenceRequest, subjects
from costwise.messaging import NatsServer, connect, ensure_streams, publish
from costwise.router import RouterSettings
from costwise.router import build as build_router
from costwise.worker import Engine, WorkerSettings


@dataclass
class Stack:
    url: str
    nc: Nats
    tmp: Path
    server_pid: int
    """nats-server's process: its CPU is part of what a request costs."""


@asynccontextmanager
async def nats_stack() -> AsyncIterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="costwise-bench-") as tmp:
        server = NatsServer(Path(tmp)).start()
        nc = await connect(server.url, name="bench")
        await ensure_streams(nc.jetstream())
        try:
            assert server.proc is not None, "started"
            yield Stack(server.url, nc, Path(tmp), server.proc.pid)
        finally:
            await nc.drain()
            server.stop()


@asynccontextmanager
async def service_processes(
    env: dict[str, str], services: dict[str, int]
) -> AsyncIterator[dict[str, list[asyncio.subprocess.Process]]]:
    """``python -m costwise.<name>``, ``k`` of each, as deployed (configured by ``env``); stopped with SIGTERM and
    awaited on exit."""
    procs: dict[str, list[asyncio.subprocess.Process]] = {name: [] for name in services}
    try:
        for name, k in services.items():
            for _ in range(k):
                procs[name].append(
                    await asyncio.create_subprocess_exec(sys.executable, "-m", f"costwise.{name}", env=env)
                )
        yield procs
    finally:
        for proc in (p for ps in procs.values() for p in ps):
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 30)


@asynccontextmanager
async def front(stack: Stack, pool: str, *, cache: bool) -> AsyncIterator[Callable[[InferenceRequest], Awaitable[str]]]:
    """The services in front of a worker pool, in this process: a router sending "auto" to ``pool`` and, with
    ``cache``, the cache (default settings) before it. Yields how to submit a request: through the cache, or
    straight to where the cache forwards its misses."""
    services: list[Any] = [await build_router(RouterSettings(nats_url=stack.url), catalog=default_catalog(pool))]
    if cache:
        services.append(await build_cache(CacheSettings(nats_url=stack.url, data_dir=str(stack.tmp / "cache"))))
    for service in services:
        await service.start()
    try:
        yield Client(stack.nc).publish if cache else to_route(stack.nc.jetstream())
    finally:
        for service in services:
            await service.stop()


def to_route(js: JetStreamContext) -> Callable[[InferenceRequest], Awaitable[str]]:
    async def submit(req: InferenceRequest) -> str:
        await publish(js, subjects.route(req.tenant), req, msg_id=subjects.dedup_id(req.tenant, req.request_id))
        return req.request_id

    return submit


async def load_engine(model: str, max_in_flight: int, max_model_len: int = 2048) -> Engine:
    settings = WorkerSettings(model=model, max_model_len=max_model_len, max_in_flight=max_in_flight)
    return await asyncio.to_thread(Engine.load, settings)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[max(0, min(98, round(q) - 1))]
