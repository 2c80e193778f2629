"""One request, one trace: gateway → cache → router → vLLM worker → router → webhook, every hop a span.

All services in this process on the session's nats-server, engine and embedder, exporting to one in-memory
exporter; the webhook goes to a local receiver the test allow-lists.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio
from aiohttp import web
from nats.aio.client import Client as Nats
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costwise.cache import CacheSettings
from costwise.cache import build as build_cache
from costwise.catalog import default_catalog
from costwise.contracts import subjects
from costwise.gateway import GatewaySettings
from costwise.gateway import build as build_gateway
from costwise.router import RouterSettings
from costwise.router import build as build_router
from costwise.testing import free_port, span_names
from costwise.webhooks import WebhooksSettings
from costwise.webhooks import build as build_webhooks
from costwise.worker import WorkerSettings
from costwise.worker import build as build_worker


@pytest_asyncio.fixture
async def hooks() -> AsyncIterator[tuple[str, asyncio.Queue[dict[str, str]]]]:
    """A webhook receiver on 127.0.0.1; yields its URL and the headers of each call it gets."""
    calls: asyncio.Queue[dict[str, str]] = asyncio.Queue()

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        await calls.put(dict(request.headers))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/hook", calls
    await runner.cleanup()


async def test_a_request_is_one_trace_across_every_hop(
    nats_url: str,
    nc: Nats,
    engine: Any,
    semantic_cache: Any,
    unique: str,
    tracer_provider: Any,
    span_exporter: InMemorySpanExporter,
    hooks: tuple[str, asyncio.Queue[dict[str, str]]],
) -> None:
    url, calls = hooks
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    webhooks_settings = WebhooksSettings(
        nats_url=nats_url, secrets={unique: [secret]}, allow=[url.split("/")[2]], poll_s=0.2, rescan_s=0.5
    )
    services = [
        await build_cache(CacheSettings(nats_url=nats_url), semantic=semantic_cache, tracer_provider=tracer_provider),
        await build_router(
            RouterSettings(nats_url=nats_url), catalog=default_catalog(unique), tracer_provider=tracer_provider
        ),
        await build_worker(
            WorkerSettings(pool=unique, max_model_len=2048), nc=nc, engine=engine, tracer_provider=tracer_provider
        ),
        await build_webhooks(webhooks_settings, nc=nc, tracer_provider=tracer_provider),
    ]
    gateway_settings = GatewaySettings(nats_url=nats_url, callback_allow=[url.split("/")[2]])
    gateway = await build_gateway(gateway_settings, nc=nc, tracer_provider=tracer_provider)
    for service in services:
        await service.start()
    try:
        key = await gateway.gateway.keys.create(unique)
        body = {"model": "auto", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}], "callback_url": url}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway.app), base_url="http://gw") as http:
            accepted = await http.post("/v1/requests", json=body, headers={"Authorization": f"Bearer {key.secret}"})
        assert accepted.status_code == 202
        delivered = await asyncio.wait_for(calls.get(), timeout=60)
    finally:
        for service in reversed(services):
            await (service.drain(0) if hasattr(service, "drain") else service.stop())
        await gateway.close()
    trace_id = int(delivered["traceparent"].split("-")[1], 16)  # the webhook call carries the trace on

    def every_hop(names: set[str]) -> bool:
        hops = [
            lambda n: n.startswith("POST /v1/requests"),  # gateway
            lambda n: n.startswith(subjects.requests("")),  # cache consumed the request
            lambda n: n.startswith(subjects.route("")),  # router consumed the miss
            lambda n: n == "worker.job",
            lambda n: n.startswith(subjects.completions("")),  # router consumed the completion
            lambda n: "webhook" in n,  # the signed POST
        ]
        return all(any(hop(n) for n in names) for hop in hops)

    names = await span_names(span_exporter, trace_id, until=every_hop, timeout=15)
    assert every_hop(names), sorted(names)
