from __future__ import annotations

import logging

import nats
from nats.aio.client import Client

__all__ = ["connect"]

log = logging.getLogger("costwise.messaging")


async def connect(url: str, *, name: str) -> Client:
    """Connect to NATS and keep reconnecting forever: a broker restart must not kill a service.

    ``url`` may list several servers separated by commas (a cluster's seed list).
    """

    async def on_disconnect() -> None:
        log.info("nats disconnected (%s)", name)

    async def on_reconnect() -> None:
        log.info("nats reconnected (%s)", name)

    async def on_error(exc: Exception) -> None:
        log.warning("nats error (%s): %s", name, exc)

    return await nats.connect(
        servers=[u.strip() for u in url.split(",")],
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        error_cb=on_error,
    )
