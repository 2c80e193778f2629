"""``python -m costwise.provider``: serve one provider backend until SIGTERM/SIGINT."""

from __future__ import annotations

import sys

from costwise.messaging import run
from costwise.settings import load
from costwise.telemetry import setup

from . import ProviderWorker, build
from .settings import ProviderSettings


async def main() -> ProviderWorker:
    settings = load(ProviderSettings, "COSTWISE_PROVIDER_")
    return await build(settings, tracer_provider=setup("costwise-provider", otlp_endpoint=settings.otlp_endpoint))


if __name__ == "__main__":
    sys.exit(run(main, name="costwise-provider"))
