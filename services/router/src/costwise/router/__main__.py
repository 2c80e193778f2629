"""``python -m costwise.router``: run the router until SIGTERM/SIGINT."""

from __future__ import annotations

import sys

from costwise.messaging import run
from costwise.settings import load
from costwise.telemetry import setup

from . import Router, build
from .settings import RouterSettings


async def main() -> Router:
    settings = load(RouterSettings, "COSTWISE_ROUTER_")
    return await build(settings, tracer_provider=setup("costwise-router", otlp_endpoint=settings.otlp_endpoint))


if __name__ == "__main__":
    sys.exit(run(main, name="costwise-router"))
