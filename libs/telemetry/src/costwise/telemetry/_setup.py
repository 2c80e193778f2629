from __future__ import annotations

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter

__all__ = ["setup"]


def setup(
    service_name: str,
    *,
    exporter: SpanExporter | None = None,
    otlp_endpoint: str | None = None,
    project: str | None = None,
) -> TracerProvider | None:
    """Return a new tracer provider for ``service_name``; the caller passes it on, never a global.

    ``exporter`` (tests: an in-memory exporter) is flushed synchronously; ``otlp_endpoint``
    (``http://host:4318/v1/traces``) exports in batches. With neither, return ``None`` and services
    trace nothing: creating spans nobody exports was a third of the router's CPU per message
    (docs/benchmarks.md), and a deployment traces all of its services or none.
    """
    if exporter is None and not otlp_endpoint:
        return None
    attrs = {"service.name": service_name}
    if project:
        # Phoenix files spans under this project instead of "default".
        attrs["openinference.project.name"] = project
    provider = TracerProvider(resource=Resource.create(attrs))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
    return provider
