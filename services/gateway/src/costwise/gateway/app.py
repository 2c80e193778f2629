"""Composition root of the gateway: the only place it connects to anything."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator

import uvicorn
from fastapi import FastAPI
from nats.aio.client import Client as Nats
from opentelemetry.trace import TracerProvider

from costwise.catalog import load_catalog
from costwise.client import Client, ResultWaiter
from costwise.contracts.subjects import GATEWAY_KEYS, GATEWAY_REQUESTS
from costwise.messaging import connect, ensure_streams, run_until_signalled

from ._http import create_app
from ._service import Gateway
from .budget import AlwaysAllow, BudgetHook
from .keys import KeyStore
from .settings import GatewaySettings

__all__ = ["GatewayApp", "Serving", "build"]

SERVICE = "gateway"


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the caller owns SIGTERM (``run_until_signalled``), so the
    gateway stops like every other service (exit 0), and tests can run it without losing Ctrl-C."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Serving:
    """A running HTTP server (started by :meth:`GatewayApp.serve`)."""

    def __init__(self, server: uvicorn.Server, task: asyncio.Task[None]) -> None:
        self._server = server
        self._task = task

    @property
    def port(self) -> int:
        return int(self._server.servers[0].sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop accepting, let the requests in flight finish, return when done."""
        self._server.should_exit = True
        await self._task


class GatewayApp:
    """The built gateway: its ASGI ``app``, the ``gateway`` behind it, and how to serve and close it."""

    def __init__(self, gateway: Gateway, app: FastAPI, nc: Nats, *, owns_connection: bool) -> None:
        self.gateway = gateway
        self.app = app
        self._nc = nc
        self._owns = owns_connection

    async def serve(self, *, port: int | None = None) -> Serving:
        """Serve ``app`` with uvicorn in the background; returns once it listens (``port=0``: any free one)."""
        settings = self.gateway.settings
        server = _Server(
            uvicorn.Config(
                self.app,
                host=settings.host,
                port=settings.port if port is None else port,
                server_header=False,
                log_level="info",
                # h11, not httptools: it bounds the size of a request's head (headers are an input too).
                http="h11",
                h11_max_incomplete_event_size=settings.max_header_bytes,
                limit_concurrency=settings.max_concurrency,
            )
        )
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                await task  # uvicorn's own error, if it raised one
                raise RuntimeError(f"the gateway could not listen on {settings.host}:{settings.port}")
            await asyncio.sleep(0.02)
        return Serving(server, task)

    async def serve_until_signalled(self) -> None:
        """Serve until SIGTERM/SIGINT, then finish the requests in flight and close."""
        serving: list[Serving] = []

        async def start() -> None:
            serving.append(await self.serve())

        async def stop() -> None:
            await serving[0].stop()
            await self.close()

        await run_until_signalled(start, stop)

    async def close(self) -> None:
        await self.gateway.close()
        if self._owns:
            await self._nc.drain()


async def build(
    settings: GatewaySettings,
    *,
    nc: Nats | None = None,
    budget: BudgetHook | None = None,
    tracer_provider: TracerProvider | None = None,
    clock: Callable[[], float] = time.time,
) -> GatewayApp:
    """Connect (unless ``nc`` is given), provision streams and buckets, and wire the HTTP app."""
    owns = nc is None
    nc = nc or await connect(settings.nats_url, name=f"costwise-{SERVICE}")
    js = nc.jetstream()
    await ensure_streams(js)  # idempotent: any service may be the first one up
    catalog = load_catalog(settings.catalog)
    gateway = Gateway(
        settings,
        client=Client(nc),
        waiter=await ResultWaiter(js).start(),
        js=js,
        keys=KeyStore(await js.key_value(GATEWAY_KEYS.bucket), clock=clock),
        accepted=await js.key_value(GATEWAY_REQUESTS.bucket),
        budget=budget or AlwaysAllow(),
        price=catalog.baseline_price,
        clock=clock,
    )
    app = create_app(gateway, max_body_bytes=settings.max_body_bytes, tracer_provider=tracer_provider)
    return GatewayApp(gateway, app, nc, owns_connection=owns)
