"""``python -m costwise.cache``: run the cache until SIGTERM/SIGINT."""

from __future__ import annotations

import sys

from costwise.messaging import run
from costwise.settings import load
from costwise.telemetry import setup

from . import Cache, build
from .settings import CacheSettings


async def main() -> Cache:
    settings = load(CacheSettings, "COSTWISE_CACHE_")
    return await build(settings, tracer_provider=setup("costwise-cache", otlp_endpoint=settings.otlp_endpoint))


if __name__ == "__main__":
    sys.exit(run(main, name="costwise-cache"))
