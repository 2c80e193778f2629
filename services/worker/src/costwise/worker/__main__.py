"""``python -m costwise.worker``: serve one pool until SIGTERM (spot notice), then hand back and exit."""

from __future__ import annotations

import asyncio

from costwise.messaging import run_until_signalled
from costwise.settings import load
from costwise.telemetry import setup

from . import build
from .settings import WorkerSettings


async def main() -> None:
    settings = load(WorkerSettings, "COSTWISE_WORKER_")
    tracer_provider = setup("costwise-worker", otlp_endpoint=settings.otlp_endpoint)
    worker = await build(settings, tracer_provider=tracer_provider)
    try:
        await run_until_signalled(worker.start, worker.stop)
    finally:
        worker.engine.shutdown()  # stops the engine-core child process


if __name__ == "__main__":
    asyncio.run(main())
