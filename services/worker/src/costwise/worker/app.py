"""Composition root of the worker: the only place it connects to anything, loads a model or opens an HTTP client."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

from nats.aio.client import Client
from opentelemetry.trace import NoOpTracerProvider, TracerProvider

from costwise.contracts import Clock
from costwise.messaging import own_connection, provision

from ._protocol import GenerationEngine
from ._service import Worker, pool_queue
from .engine import Engine
from .settings import WorkerSettings

__all__ = ["Worker", "build"]


async def build(
    settings: WorkerSettings,
    *,
    nc: Client | None = None,
    engine: GenerationEngine | None = None,
    tracer_provider: TracerProvider | None = None,
    clock: Clock = time.time,
) -> Worker:
    """Connect (unless given ``nc``), provision the pool's queue and make the engine, unless given one (tests share
    one per session, which the worker then never shuts down): a client of ``settings.engine_url`` when it is set,
    else vLLM loaded in-process. ``start()`` begins pulling."""
    async with contextlib.AsyncExitStack() as stack:  # closes what was opened if building fails half-way
        nc = await own_connection(stack, settings.nats_url, nc, name=f"worker-{settings.worker_id}")
        await provision(nc.jetstream(), [pool_queue(settings)])  # the own queue is made when pulling starts
        if engine is None:
            engine = _server_engine(settings, stack) if settings.engine_url else await _load_engine(settings, stack)
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


def _server_engine(settings: WorkerSettings, stack: contextlib.AsyncExitStack) -> GenerationEngine:
    # Imported here, as vLLM is in Engine.load: a worker of the other kind never loads what it does not run.
    import httpx

    from ._server_engine import ServerEngine

    # No redirects: a server that redirects is misconfigured, and following one could leak the API key.
    limits = httpx.Limits(max_connections=settings.max_in_flight)  # one streamed call per job in flight
    http = httpx.AsyncClient(follow_redirects=False, timeout=settings.engine_timeout_s, limits=limits)
    stack.push_async_callback(http.aclose)
    # Read once: the key lives in the environment, never in config, logs or messages.
    api_key = os.environ.get(settings.engine_api_key_env) if settings.engine_api_key_env else None
    return ServerEngine(http, settings, api_key=api_key)
