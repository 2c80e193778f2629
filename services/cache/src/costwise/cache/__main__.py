"""``python -m costwise.cache``: run the cache until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio

from costwise.messaging import run_until_signalled
from costwise.settings import load
from costwise.telemetry import setup

from . import build
from .settings import CacheSettings


async def main() -> None:
    settings = load(CacheSettings, "COSTWISE_CACHE_")
    cache = await build(settings, tracer_provider=setup("costwise-cache", otlp_endpoint=settings.otlp_endpoint))
    await run_until_signalled(cache.start, cache.stop)


if __name__ == "__main__":
    asyncio.run(main())
