"""The gateway starts (or continues) the request's trace and hands it to the queue."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest_asyncio
from nats.aio.client import Client as Nats
from nats.js import JetStreamContext
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from costwise.gateway import GatewayApp, GatewaySettings, build

from .conftest import responding

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest_asyncio.fixture(loop_scope="session")
async def traced(nc: Nats, tracer_provider: TracerProvider) -> AsyncIterator[GatewayApp]:
    built = await build(GatewaySettings(), nc=nc, tracer_provider=tracer_provider)
    yield built
    await built.close()


async def test_a_request_is_one_trace_from_the_http_call_into_the_queue(
    traced: GatewayApp, span_exporter: InMemorySpanExporter, unique: str, js: JetStreamContext
) -> None:
    key = await traced.gateway.keys.create(unique)
    headers = {"Authorization": f"Bearer {key.secret}", "traceparent": f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"}
    body = {"model": "small", "messages": [{"role": "user", "content": "hi"}]}
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=traced.app), base_url="http://gw") as http,
        responding(js, unique) as responder,
    ):
        assert (await http.post("/v1/chat/completions", json=body, headers=headers)).status_code == 200
        fresh = await http.get("/v1/requests/unknown-id", headers={"Authorization": headers["Authorization"]})
    [span, polled] = span_exporter.get_finished_spans()
    assert span.name == "POST /v1/chat/completions" and span.kind == SpanKind.SERVER
    assert span.context is not None and f"{span.context.trace_id:032x}" == CALLER_TRACE  # the caller's trace goes on
    attributes = dict(span.attributes or {})
    assert attributes["gen_ai.request.model"] == "small" and attributes["gen_ai.response.model"] == "tiny-llama"
    assert (attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"]) == (3, 2)
    assert attributes["costwise.cost_usd"] == 0.000125 and attributes["http.response.status_code"] == 200
    # The queued request carries the trace on, so the cache, router and worker join it.
    assert responder.headers[0]["traceparent"].split("-")[1] == CALLER_TRACE
    # Without a caller trace, the gateway starts one; routes are named by template, not by id.
    assert fresh.status_code == 404 and polled.name == "GET /v1/requests/{request_id}"
    assert polled.context is not None and f"{polled.context.trace_id:032x}" != CALLER_TRACE
