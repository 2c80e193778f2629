"""``python -m costwise.router``: run the router until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import sys

from costwise.catalog import CatalogError
from costwise.messaging import run_until_signalled
from costwise.settings import SettingsError, load
from costwise.telemetry import setup

from . import build
from .settings import RouterSettings


async def main() -> None:
    settings = load(RouterSettings, "COSTWISE_ROUTER_")
    router = await build(settings, tracer_provider=setup("costwise-router", otlp_endpoint=settings.otlp_endpoint))
    await run_until_signalled(router.start, router.stop)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except (SettingsError, CatalogError) as exc:  # bad config: one clear line, not a traceback
        sys.exit(f"costwise-router: {exc}")
