"""``python -m costwise.provider``: serve one provider backend until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import sys

from costwise.catalog import CatalogError
from costwise.messaging import run_until_signalled
from costwise.settings import SettingsError, load
from costwise.telemetry import setup

from . import build
from .settings import ProviderSettings


async def main() -> None:
    settings = load(ProviderSettings, "COSTWISE_PROVIDER_")
    worker = await build(settings, tracer_provider=setup("costwise-provider", otlp_endpoint=settings.otlp_endpoint))
    await run_until_signalled(worker.start, worker.stop)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except (SettingsError, CatalogError) as exc:
        sys.exit(f"costwise-provider: {exc}")
