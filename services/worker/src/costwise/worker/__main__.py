"""``python -m costwise.worker``: serve one pool until SIGTERM (spot notice), then hand back and exit."""

from __future__ import annotations

import sys

from costwise.messaging import run
from costwise.settings import load
from costwise.telemetry import setup

from . import Worker, build
from .settings import WorkerSettings


async def main() -> Worker:
    settings = load(WorkerSettings, "COSTWISE_WORKER_")
    return await build(settings, tracer_provider=setup("costwise-worker", otlp_endpoint=settings.otlp_endpoint))


if __name__ == "__main__":
    sys.exit(run(main, name="costwise-worker"))
