"""One SERVER span per HTTP request, continuing the caller's W3C trace: the trace of a request starts here.

The span is current while the request is handled, so the publish to the queue carries its ``traceparent``
and every hop after (cache, router, worker) joins the same trace. Installed only with a tracer provider.
"""

from __future__ import annotations

from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from costwise.telemetry import extract

__all__ = ["TraceRequests"]

_PROPAGATED = (b"traceparent", b"tracestate")


class TraceRequests:
    def __init__(self, app: ASGIApp, tracer_provider: TracerProvider) -> None:
        self.app = app
        self.tracer = tracer_provider.get_tracer("costwise.gateway")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"] if k in _PROPAGATED}
        method = scope["method"]
        with self.tracer.start_as_current_span(method, context=extract(carrier), kind=SpanKind.SERVER) as span:

            async def traced_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = message["status"]
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR))
                await send(message)

            span.set_attribute("http.request.method", method)
            await self.app(scope, receive, traced_send)
            route = scope.get("route")  # set by the router: the template, not the path with its ids
            if route is not None:
                span.update_name(f"{method} {route.path}")
                span.set_attribute("http.route", route.path)
