"""The gateway's OpenAPI document, committed as ``services/gateway/openapi.json`` (a test keeps it current)."""

from __future__ import annotations

import json
from pathlib import Path

from ._http import create_app
from .settings import GatewaySettings

__all__ = ["COMMITTED", "render", "write"]

COMMITTED = Path(__file__).parents[3] / "openapi.json"


def render() -> str:
    """The document as committed: stable key order, trailing newline."""
    app = create_app(None, max_body_bytes=GatewaySettings().max_body_bytes)
    return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"


def write(path: Path = COMMITTED) -> Path:
    path.write_text(render())
    return path
