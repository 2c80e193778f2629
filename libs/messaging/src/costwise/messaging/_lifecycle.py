"""How every service is owned, started and stopped: one exit stack per service, one ``run`` per entry point."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from nats.aio.client import Client

from ._connect import NatsUnreachable, connect

__all__ = ["Service", "own_connection", "run", "run_command"]


class Service(Protocol):
    """What ``build()`` returns: nothing runs until ``start()``; ``stop()`` closes exactly what ``build`` and
    ``start`` opened (never what was injected)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def own_connection(stack: contextlib.AsyncExitStack, url: str, nc: Client | None, *, name: str) -> Client:
    """``nc`` if the caller injected one (the caller closes it), else a new connection ``stack`` drains."""
    if nc is not None:
        return nc
    nc = await connect(url, name=name)
    stack.push_async_callback(nc.drain)
    return nc


def run(build: Callable[[], Awaitable[Service]], *, name: str) -> int:
    """The shape of every service's ``__main__``: build, start, serve until SIGTERM/SIGINT, stop.

    Logs go to stderr at INFO; ``COSTWISE_LOG_LEVEL`` (``debug``, ``warning``, …) sets costwise's own loggers'
    level without turning on every library's debug output.
    Bad configuration (a ``ValueError`` from ``build``: settings, catalog, secrets) is one clear line on stderr
    and exit code 2, not a traceback; a clean stop is 0, also when the signal comes while ``build`` is still
    loading (a pod scaled in as it starts): nothing is started then, and what ``build`` opened is closed.
    """

    async def serve() -> None:
        _configure_logging()
        stopping = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stopping.set)
        try:
            service = await build()
        except ValueError as exc:
            raise _BadConfig(str(exc)) from None
        try:
            if not stopping.is_set():
                await service.start()
                await stopping.wait()
        finally:  # a start that failed half-way still closes what build opened (an engine's child process)
            await service.stop()

    try:
        asyncio.run(serve())
    except _BadConfig as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    return 0


def run_command(command: Coroutine[Any, Any, int], *, name: str) -> int:
    """The shape of a one-shot command's ``main`` (a key, a secret, a budget): its exit status, or one line
    on stderr and 1 when no NATS server answers (connect with ``patient=False``), not a traceback."""
    try:
        return asyncio.run(command)
    except NatsUnreachable as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1


def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(created).3f %(name)s %(levelname)s %(message)s")
    level = os.environ.get("COSTWISE_LOG_LEVEL", "").upper()
    if not level:
        return
    if not isinstance(logging.getLevelName(level), int):
        raise _BadConfig(f"COSTWISE_LOG_LEVEL={level.lower()!r} is not a log level (debug, info, warning, error)")
    logging.getLogger("costwise").setLevel(level)


class _BadConfig(Exception):
    pass
