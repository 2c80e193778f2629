"""A tracing endpoint that is down (or not up yet) is one log line, not one per failed export."""

from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from costwise.telemetry import setup


class _Ok(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _export_spans(provider: object, count: int) -> None:
    for i in range(count):
        with provider.get_tracer("test").start_as_current_span(f"span-{i}"):  # type: ignore[attr-defined]
            pass
        provider.force_flush()  # type: ignore[attr-defined]  # one export (one failed batch) per span


def test_many_failed_exports_are_one_line_and_recovery_is_another(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)  # what a service logs (basicConfig at INFO)
    lines = caplog.records
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "0.5")  # no retry fits: each export fails at once
    port = _closed_port()
    endpoint = f"http://127.0.0.1:{port}/v1/traces"
    provider = setup("costwise-test", otlp_endpoint=endpoint)
    assert provider is not None
    try:
        _export_spans(provider, 20)
        assert [(r.name, r.levelname) for r in lines] == [("costwise.telemetry", "WARNING")]
        assert endpoint in lines[0].getMessage()
        assert "cannot export" in lines[0].getMessage()

        server = HTTPServer(("127.0.0.1", port), _Ok)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            _export_spans(provider, 5)
        finally:
            server.shutdown()
            server.server_close()
        assert len(lines) == 2
        assert "again (20 span(s) dropped meanwhile)" in lines[1].getMessage()

        _export_spans(provider, 5)  # down again: one more line
        assert len(lines) == 3
        assert "cannot export" in lines[2].getMessage()
    finally:
        provider.shutdown()
    assert len(lines) == 3  # shutting down with the endpoint gone is no line either
