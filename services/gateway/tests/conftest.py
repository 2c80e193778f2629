"""The gateway on a real uvicorn server and a real nats-server; a responder stands in for the pipeline."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest_asyncio
from nats.aio.client import Client as Nats
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from costwise.contracts import ErrorCode, ErrorInfo, InferenceRequest, Output, Result, Usage, decode, subjects
from costwise.contracts.subjects import REQUESTS, ROUTE
from costwise.gateway import GatewayApp, GatewaySettings, build
from costwise.messaging import publish

Behaviour = Callable[[InferenceRequest], Awaitable[Result | None]]


def ok(request: InferenceRequest, text: str | None = None) -> Result:
    return Result(
        request_id=request.request_id,
        tenant=request.tenant,
        status="ok",
        output=Output(text=text or f"echo: {request.messages[-1].content}", finish_reason="stop"),
        source="engine",
        model="tiny-llama",
        pool="default",
        usage=Usage(prompt_tokens=3, completion_tokens=2),
        cost_usd=0.000125,
        created_ms=request.created_ms,
        completed_ms=int(time.time() * 1000),
    )


def failed(request: InferenceRequest, code: ErrorCode, message: str) -> Result:
    return Result(
        request_id=request.request_id,
        tenant=request.tenant,
        status="error",
        error=ErrorInfo(code=code, message=message),
        created_ms=request.created_ms,
    )


async def echo(request: InferenceRequest) -> Result | None:
    return ok(request)


async def answer(js: JetStreamContext, result: Result) -> None:
    """Publish ``result`` the way the router does (same subject and msg-id)."""
    await publish(
        js,
        subjects.results(result.tenant, result.request_id),
        result,
        msg_id=subjects.dedup_id(result.tenant, result.request_id),
    )


@dataclass
class Responder:
    """Pulls one tenant's requests from the REQUESTS stream (its own durable) and answers per ``behaviour``."""

    js: JetStreamContext
    tenant: str
    behaviour: Behaviour = echo
    seen: list[InferenceRequest] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    stopping: bool = False
    """Checked every fetch: on Python 3.11 nats-py's fetch (asyncio.wait_for) can swallow a cancel, and a loop
    that only stops when cancelled then runs on and hangs the test that waits for it."""

    async def run(self) -> None:
        """Serve both ways in: the cache's queue, and the router's (where a ``bypass`` request enters)."""
        await asyncio.gather(
            self._pull(subjects.requests(self.tenant), REQUESTS.name),
            self._pull(subjects.route(self.tenant), ROUTE.name),
        )

    async def _pull(self, subject: str, stream: str) -> None:
        sub = await self.js.pull_subscribe(subject, durable=f"test-{self.tenant}", stream=stream)
        try:
            while not self.stopping:
                try:
                    messages = await sub.fetch(16, timeout=0.5)
                except TimeoutError:
                    continue
                for msg in messages:
                    self.headers.append(dict(msg.headers or {}))
                    await self._handle(decode(msg.data, InferenceRequest))
                    await msg.ack()
        finally:
            await sub.unsubscribe()  # a pull subscription left behind stalls the session connection's drain

    async def _handle(self, request: InferenceRequest) -> None:
        self.seen.append(request)
        result = await self.behaviour(request)
        if result is not None:
            await answer(self.js, result)


# Callback hosts the tests name, resolved without DNS (the sandbox may have none).
ZONE = {
    "example.com": ["93.184.216.34"],
    "hooks.example": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"],
    "internal.example": ["10.1.2.3"],
    "rebind.example": ["93.184.216.34", "192.168.1.20"],
}


async def resolve(host: str, port: int) -> list[str]:
    if host not in ZONE:
        raise OSError(f"{host}: name or service not known")
    return ZONE[host]


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def gateway(nc: Nats) -> AsyncIterator[GatewayApp]:
    built = await build(GatewaySettings(timeout_margin_s=0.5), nc=nc, resolver=resolve)
    yield built
    await built.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def base_url(gateway: GatewayApp) -> AsyncIterator[str]:
    """The gateway served by uvicorn on a free loopback port, in the session's event loop."""
    serving = await gateway.serve(port=0)
    yield f"http://127.0.0.1:{serving.port}"
    await serving.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def tenant_key(gateway: GatewayApp, unique: str) -> tuple[str, str]:
    """A fresh tenant and an API key for it."""
    key = await gateway.gateway.keys.create(unique)
    return unique, key.secret


@contextlib.asynccontextmanager
async def responding(js: JetStreamContext, tenant: str, behaviour: Behaviour = echo) -> AsyncIterator[Responder]:
    responder = Responder(js, tenant, behaviour)
    task = asyncio.create_task(responder.run())
    try:
        yield responder
    finally:
        responder.stopping = True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for stream in (REQUESTS.name, ROUTE.name):
            with contextlib.suppress(NotFoundError):  # cancelled before the consumer was created
                await js.delete_consumer(stream, f"test-{tenant}")


async def gateway_process(env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    """``python -m costwise.gateway *args`` with ``env`` (output piped)."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "costwise.gateway",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
