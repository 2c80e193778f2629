"""Composition root of the gateway: the only place it connects to anything."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI
from nats.aio.client import Client as Nats
from opentelemetry.trace import TracerProvider

from costwise.budget import open_budgets
from costwise.callbacks import Guard, Resolver, SecretStore, system_resolver
from costwise.catalog import load_catalog
from costwise.client import Client, ResultWaiter
from costwise.contracts import Clock
from costwise.contracts.subjects import GATEWAY_KEYS, GATEWAY_REQUESTS, WEBHOOK_SECRETS
from costwise.messaging import own_connection, provision

from ._http import create_app
from ._mapping import model_list
from ._notes import Notes
from ._service import Gateway
from .keys import KeyStore
from .settings import GatewaySettings

__all__ = ["GatewayApp", "Serving", "build"]

SERVICE = "gateway"


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the caller owns SIGTERM (``costwise.messaging.run``), so the
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
    """The built gateway: its ASGI ``app``, the ``gateway`` behind it and its NATS connection ``nc``.

    Nothing listens until ``start()``; ``stop()`` closes exactly what ``build`` and ``start`` opened, never an
    injected connection (a :class:`costwise.messaging.Service`, so ``costwise.messaging.run`` can serve it).
    """

    def __init__(self, gateway: Gateway, app: FastAPI, nc: Nats, *, owned: contextlib.AsyncExitStack) -> None:
        self.gateway = gateway
        self.app = app
        self.nc = nc
        self._owned = owned
        """What ``build`` opened; ``start`` adds the server, so ``stop`` closes it all in reverse."""

    async def serve(self, *, port: int | None = None) -> Serving:
        """Serve ``app`` with uvicorn in the background; returns once it listens (``port=0``: any free one).

        The caller stops the returned server (``start`` is the variant that ``stop`` stops)."""
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

    async def start(self) -> None:
        """Serve on the configured host and port until ``stop``."""
        self._owned.push_async_callback((await self.serve()).stop)

    async def stop(self) -> None:
        """Stop serving (requests in flight finish), then close what ``build`` opened."""
        await self._owned.aclose()

    async def close(self) -> None:
        """``stop``, by the name a gateway used without ``start`` (the keys CLI, tests over ASGI) calls it."""
        await self._owned.aclose()


async def build(
    settings: GatewaySettings,
    *,
    nc: Nats | None = None,
    tracer_provider: TracerProvider | None = None,
    clock: Clock = time.time,
    resolver: Resolver = system_resolver,
) -> GatewayApp:
    """Load the catalog, connect (unless ``nc`` is given), provision streams and buckets, and wire the HTTP
    app (``start()`` serves it). A bad catalog raises ``CatalogError``, a bad ``callback_allow`` ValueError,
    before anything is opened. ``resolver`` resolves callback hosts (tests inject one)."""
    catalog = load_catalog(settings.catalog)
    guard = Guard(settings.callback_allow, resolver)
    async with contextlib.AsyncExitStack() as stack:  # closes what was opened if building fails half-way
        nc = await own_connection(stack, settings.nats_url, nc, name=SERVICE)
        js = nc.jetstream()
        await provision(js)  # idempotent: any service may be the first one up
        waiter = await ResultWaiter(js).start()
        stack.push_async_callback(waiter.stop)
        keys = await KeyStore(await js.key_value(GATEWAY_KEYS.bucket), clock=clock).follow()
        stack.push_async_callback(keys.stop)
        gateway = Gateway(
            settings,
            client=Client(nc),
            waiter=waiter,
            js=js,
            keys=keys,
            notes=Notes(await js.key_value(GATEWAY_REQUESTS.bucket)),
            budgets=await open_budgets(js, clock=clock),
            price=catalog.baseline_price,
            models=model_list(catalog),
            guard=guard,
            webhook_secrets=SecretStore(await js.key_value(WEBHOOK_SECRETS.bucket), clock=clock),
            clock=clock,
        )
        owned = stack.pop_all()
    app = create_app(gateway, max_body_bytes=settings.max_body_bytes, tracer_provider=tracer_provider)
    return GatewayApp(gateway, app, nc, owned=owned)
