"""A throwaway embedded stack for one benchmark run: nats-server in a temp dir, one engine, in-process services."""

from __future__ import annotations

import asyncio
import statistics
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from nats.aio.client import Client as Nats

from costwise.cache import CacheSettings
from costwise.cache import build as build_cache
from costwise.messaging import NatsServer, connect, ensure_streams
from costwise.router import RouterSettings
from costwise.router import build as build_router
from costwise.worker import Engine, WorkerSettings


@dataclass
class Stack:
    url: str
    nc: Nats


@asynccontextmanager
async def nats_stack() -> AsyncIterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="costwise-bench-") as tmp:
        server = NatsServer(Path(tmp)).start()
        nc = await connect(server.url, name="bench")
        await ensure_streams(nc.jetstream())
        try:
            yield Stack(server.url, nc)
        finally:
            await nc.drain()
            server.stop()


@asynccontextmanager
async def front(stack: Stack, pool: str) -> AsyncIterator[None]:
    """The services in front of a worker pool, in this process: cache, and a router sending "auto" to ``pool``."""
    cache = await build_cache(CacheSettings(nats_url=stack.url))
    router = await build_router(RouterSettings(nats_url=stack.url, routes={"auto": pool}))
    await cache.start()
    await router.start()
    try:
        yield
    finally:
        await router.stop()
        await cache.stop()


async def load_engine(model: str, max_in_flight: int, max_model_len: int = 2048) -> Engine:
    settings = WorkerSettings(model=model, max_model_len=max_model_len, max_in_flight=max_in_flight)
    return await asyncio.to_thread(Engine.load, settings)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[max(0, min(98, round(q) - 1))]
