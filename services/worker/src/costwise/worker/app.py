"""Composition root of the worker: the only place it connects to anything or loads a model."""

from __future__ import annotations

import asyncio
import contextlib
import time

from nats.aio.client import Client
from opentelemetry.trace import NoOpTracerProvider, TracerProvider

from costwise.contracts import Clock
from costwise.messaging import own_connection, provision

from ._service import Worker, pool_queue
from .engine import Engine
from .settings import WorkerSettings

__all__ = ["Worker", "build"]


async def build(
    settings: WorkerSettings,
    *,
    nc: Client | None = None,
    engine: Engine | None = None,
    tracer_provider: TracerProvider | None = None,
    clock: Clock = time.time,
) -> Worker:
    """Connect (unless given ``nc``), provision the pool's queue and load the engine (unless given one; tests
    share one per session, which the worker then never shuts down). ``start()`` begins pulling."""
    async with contextlib.AsyncExitStack() as stack:  # closes what was opened if building fails half-way
        nc = await own_connection(stack, settings.nats_url, nc, name=f"worker-{settings.worker_id}")
        await provision(nc.jetstream(), [pool_queue(settings)])  # the own queue is made when pulling starts
        if engine is None:
            engine = await _load_engine(settings, stack)
        owned = stack.pop_all()
    # A tracer even when nothing is recorded: its spans still carry the publisher's context, so a handed-back
    # job and the completion stay in the request's trace.
    tracer = (tracer_provider or NoOpTracerProvider()).get_tracer("costwise.worker")
    return Worker(settings, nc, engine, clock=clock, tracer=tracer, owned=owned)


async def _load_engine(settings: WorkerSettings, stack: contextlib.AsyncExitStack) -> Engine:
    engine = await asyncio.to_thread(Engine.load, settings)
    stack.callback(engine.shutdown)  # stops the engine-core child process, after the worker wound down
    await engine.warm_up()
    return engine
