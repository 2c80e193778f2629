from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable

__all__ = ["run_until_signalled"]


async def run_until_signalled(start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]]) -> None:
    """Start a service, wait for SIGTERM or SIGINT, then stop it cleanly (the shape of every ``__main__``)."""
    logging.basicConfig(level=logging.INFO, format="%(created).3f %(name)s %(levelname)s %(message)s")
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await start()
    await stopping.wait()
    await stop()
