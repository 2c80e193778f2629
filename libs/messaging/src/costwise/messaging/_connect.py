from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlparse

import nats
from nats.aio.client import Client
from nats.errors import NoServersError

__all__ = ["NatsUnreachable", "connect"]

log = logging.getLogger("costwise.messaging")


class NatsUnreachable(ConnectionError):
    """A one-shot command found no NATS server at its URL (a service would have kept trying)."""


async def connect(url: str, *, name: str, patient: bool = True, **options: Any) -> Client:
    """Connect to NATS and keep reconnecting forever: a broker restart must not kill a service.

    ``url`` may list several servers separated by commas (a cluster's seed list); credentials in it
    (``nats://user:password@host``) are used for every server, the ones the cluster announces included. One-shot
    commands (a CLI) pass ``patient=False``: a few tries over about two seconds, then :class:`NatsUnreachable`
    naming the URL, instead of a prompt that hangs in silence. ``options`` go to ``nats.connect`` as they are
    (``user``, ``password``, ``inbox_prefix``, …).
    """
    servers = [u.strip() for u in url.split(",")]

    async def on_disconnect() -> None:
        log.info("nats disconnected (%s)", name)

    async def on_reconnect() -> None:
        log.info("nats reconnected (%s)", name)

    async def on_error(exc: Exception) -> None:
        log.log(logging.WARNING if patient else logging.DEBUG, "nats error (%s): %s", name, exc)

    try:
        return await nats.connect(
            servers=servers,
            name=name,
            max_reconnect_attempts=-1 if patient else 3,
            reconnect_time_wait=0.5,
            disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect,
            error_cb=on_error,
            **(_credentials(servers) | options),
        )
    except NoServersError:
        raise NatsUnreachable(
            f"no NATS server answers at {url}: is `make up` running? (COSTWISE_NATS_URL or --nats says where)"
        ) from None


def _credentials(servers: list[str]) -> dict[str, str]:
    """The user and password the URLs carry, as connection-wide options. nats-py sends a URL's own credentials
    only to that URL's server: to a server the cluster announced (a reconnect after the seed died) it would send
    none, and be refused."""
    found = {(u.username, u.password) for u in map(urlparse, servers) if u.username}
    if len(found) != 1:  # none, or seeds with different users: each URL keeps its own
        return {}
    user, password = found.pop()
    return {"token": user} if password is None else {"user": user, "password": password}
