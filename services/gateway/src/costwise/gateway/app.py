"""Composition root of the gateway: the only place it connects to anything."""

from __future__ import annotations

import time
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI
from nats.aio.client import Client as Nats

from costwise.catalog import default_catalog, load_catalog
from costwise.client import Client
from costwise.contracts.subjects import GATEWAY_KEYS, GATEWAY_REQUESTS
from costwise.messaging import connect, ensure_streams

from ._http import create_app
from ._service import Gateway
from .budget import AlwaysAllow, BudgetHook
from .keys import KeyStore
from .settings import GatewaySettings

__all__ = ["GatewayApp", "build"]

SERVICE = "gateway"


class GatewayApp:
    """The built gateway: its ASGI ``app``, the ``gateway`` behind it, and how to serve and close it."""

    def __init__(self, gateway: Gateway, app: FastAPI, nc: Nats, *, owns_connection: bool) -> None:
        self.gateway = gateway
        self.app = app
        self._nc = nc
        self._owns = owns_connection

    def server(self, *, port: int | None = None) -> uvicorn.Server:
        """A uvicorn server for ``app`` (``await server.serve()``; set ``should_exit`` to stop it)."""
        settings = self.gateway.settings
        config = uvicorn.Config(
            self.app,
            host=settings.host,
            port=settings.port if port is None else port,
            server_header=False,
            log_level="info",
        )
        return uvicorn.Server(config)

    async def close(self) -> None:
        if self._owns:
            await self._nc.drain()


async def build(
    settings: GatewaySettings,
    *,
    nc: Nats | None = None,
    budget: BudgetHook | None = None,
    clock: Callable[[], float] = time.time,
) -> GatewayApp:
    """Connect (unless ``nc`` is given), provision streams and buckets, and wire the HTTP app."""
    owns = nc is None
    nc = nc or await connect(settings.nats_url, name=f"costwise-{SERVICE}")
    js = nc.jetstream()
    await ensure_streams(js)  # idempotent: any service may be the first one up
    catalog = load_catalog(settings.catalog_path) if settings.catalog_path else default_catalog()
    gateway = Gateway(
        settings,
        client=Client(nc),
        js=js,
        keys=KeyStore(await js.key_value(GATEWAY_KEYS.bucket), clock=clock),
        accepted=await js.key_value(GATEWAY_REQUESTS.bucket),
        budget=budget or AlwaysAllow(),
        price=catalog.baseline_price,
        clock=clock,
    )
    return GatewayApp(gateway, create_app(gateway, max_body_bytes=settings.max_body_bytes), nc, owns_connection=owns)
