from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

__all__ = ["setup"]

log = logging.getLogger("costwise.telemetry")
# The OTLP exporter logs a line (a warning per retry, an error per dropped batch) for every failed export:
# while the tracing UI starts, or after it is gone, that was most of each service's log. Its loggers keep
# only their last line (the reason, for ours); `_Quiet` logs one line when exports start failing and one
# when they work again.
_OTLP_LOGGERS = "opentelemetry.exporter.otlp"


class _LastLine(logging.Handler):
    """Keeps the OTLP exporter's last line, instead of printing every one: the last naming an error, if any."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.last = ""
        self._last_any = ""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = record.getMessage()
        except Exception:  # a bad format string must not break the export thread
            line = str(record.msg)
        self._last_any = line
        if "error" in line.lower() or "reason" in line.lower():
            self.last = line

    def take(self) -> str:
        """The reason to report (then forgotten, so that a later failure never repeats a stale one)."""
        line = self.last or self._last_any
        self.last = self._last_any = ""
        return line


def _exporter_log() -> _LastLine:
    """Route the OTLP exporter's loggers into one `_LastLine` (installed once per process: logging is global)."""
    otlp = logging.getLogger(_OTLP_LOGGERS)
    for handler in otlp.handlers:
        if isinstance(handler, _LastLine):
            return handler
    handler = _LastLine()
    otlp.addHandler(handler)
    otlp.propagate = False
    return handler


class _Quiet(SpanExporter):
    """``inner`` with one log line when its exports start failing and one when they succeed again."""

    def __init__(self, inner: SpanExporter, endpoint: str, last_line: _LastLine) -> None:
        self._inner = inner
        self._endpoint = endpoint
        self._last_line = last_line
        self._lock = threading.Lock()
        self._failing = False
        self._dropped = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self._inner.export(spans)
        with self._lock:
            if result is SpanExportResult.SUCCESS:
                if self._failing:
                    log.warning(
                        "traces: exporting to %s again (%d span(s) dropped meanwhile)", self._endpoint, self._dropped
                    )
                    self._last_line.take()  # what the failures logged is history now
                self._failing, self._dropped = False, 0
            else:
                if not self._failing:
                    log.warning(
                        "traces: cannot export to %s (%s); dropping spans, one line when it works again",
                        self._endpoint,
                        self._last_line.take() or "no reason given",
                    )
                self._failing = True
                self._dropped += len(spans)
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


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

    A failing OTLP export is one warning on ``costwise.telemetry`` (and one when it works again), not a
    line per failed batch: the exporter's own loggers (``opentelemetry.exporter.otlp*``) are silenced.
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

        otlp = _Quiet(OTLPSpanExporter(endpoint=otlp_endpoint), otlp_endpoint, _exporter_log())
        provider.add_span_processor(BatchSpanProcessor(otlp))
    return provider
