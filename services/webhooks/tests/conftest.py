"""Webhooks test parts: a real HTTP receiver on 127.0.0.1 and the service on the session's nats-server."""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from costwise.testing import free_port
from costwise.webhooks import Webhooks, WebhooksSettings, build

# Tiny backoff and timeouts so retries, windows and give-ups happen in about a second.
FAST: dict[str, Any] = dict(
    retry_initial_s=0.05,
    retry_max_s=0.2,
    retry_window_s=30.0,
    attempt_timeout_s=1.0,
    connect_timeout_s=0.5,
    read_timeout_s=0.5,
    poll_s=0.2,
    rescan_s=0.5,
)


@pytest.fixture
def new_secret() -> Callable[[], str]:
    """A fresh ``whsec_`` signing secret per call."""
    return lambda: "whsec_" + base64.b64encode(os.urandom(24)).decode()


@dataclass
class Call:
    headers: dict[str, str]
    body: bytes
    status: int
    path: str


@dataclass
class Receiver:
    """A webhook receiver that records every call; ``script`` answers the next calls as
    ``(status, delay_s, body_bytes)``, then ``status``."""

    port: int = 0
    host: str = "127.0.0.1"
    """The name callbacks use (the receiver always listens on 127.0.0.1)."""
    tls: ssl.SSLContext | None = None
    status: int = 200
    script: list[tuple[int, float, int]] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}/hook?token=abc"

    @property
    def allow(self) -> str:
        return f"127.0.0.1:{self.port}"

    def delivered(self) -> list[Call]:
        """Calls answered 2xx at once with a small body: the ones the service counts as delivered."""
        return [c for c in self.calls if 200 <= c.status < 300]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True, ssl_context=self.tls).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        status, delay, size = self.script.pop(0) if self.script else (self.status, 0.0, 0)
        failing = delay > 0 or size > 0  # the service gives up on these before or while reading them
        self.calls.append(Call(dict(request.headers), body, 599 if failing else status, request.path_qs))
        await asyncio.sleep(delay)
        location = {"Location": "/hook?redirected=1"} if 300 <= status < 400 else None
        return web.Response(status=status, body=b"x" * size, headers=location)


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A receiver on a free port, not yet started (a test may want it down first)."""
    rec = Receiver(port=free_port())
    yield rec
    await rec.stop()


@pytest_asyncio.fixture
async def start_service(nc, nats_url: str) -> AsyncIterator[Callable[..., Awaitable[Webhooks]]]:  # type: ignore[no-untyped-def]
    """Start a webhooks service on the session's connection:
    ``await start_service(resolver=..., tracer_provider=..., clock=..., **settings)``."""
    running: list[Webhooks] = []

    async def start(resolver: Any = None, tracer_provider: Any = None, clock: Any = None, **overrides: Any) -> Webhooks:
        settings = WebhooksSettings(nats_url=nats_url, **{**FAST, **overrides})
        extra = {"resolver": resolver} if resolver else {}
        extra |= {"clock": clock} if clock else {}
        service = await build(settings, nc=nc, tracer_provider=tracer_provider, **extra)
        await service.start()
        running.append(service)
        return service

    yield start
    for service in running:
        await service.stop()
