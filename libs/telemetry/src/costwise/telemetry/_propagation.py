from __future__ import annotations

from collections.abc import Mapping

from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = ["extract", "inject"]

_propagator = TraceContextTextMapPropagator()  # stateless; safe to share


def inject(headers: dict[str, str], context: Context | None = None) -> dict[str, str]:
    """Add W3C ``traceparent``/``tracestate`` for ``context`` (default: current) to ``headers``."""
    _propagator.inject(headers, context=context)
    return headers


def extract(headers: Mapping[str, str] | None) -> Context:
    """The trace context carried by message ``headers`` (an empty context when there is none)."""
    return _propagator.extract(dict(headers or {}))
