"""One ordered consumer on every result, for a process that waits on many requests (the gateway's sync path)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from costwise.contracts import DecodeError, Result, decode, subjects

__all__ = ["ResultWaiter"]

log = logging.getLogger("costwise.client")


class ResultWaiter:
    """Waits for results without a JetStream consumer per wait.

    Register a wait with :meth:`expect` *before* publishing the request (or looking up its stored result).
    The consumer delivers only results the stream has stored, so a result is either stored before the
    registration — then a lookup after it finds it — or delivered after it: there is no gap. (A plain
    subscription plus a lookup has one: a result routed before the subscription existed but stored after the
    lookup ran is seen by neither.) Every result of every tenant flows through this one consumer.

    It needs a service user (the gateway's): its consumer is nats-py's ordered one, over every tenant's results,
    which a tenant's user may not create. It stays ordered because it lives as long as its process: an ordered
    consumer notices a lost consumer (missed heartbeats) and recreates it. A tenant waits with :class:`Client`.
    """

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self._waiting: dict[str, list[asyncio.Future[Result]]] = {}
        self._sub: Subscription | None = None

    async def start(self) -> ResultWaiter:
        """Start delivering: results stored from now on reach the waits registered for them."""
        everything = subjects.RESULTS.subjects[0]
        self._sub = await self._js.subscribe(
            everything, cb=self._deliver, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW
        )
        return self

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    @asynccontextmanager
    async def expect(self, tenant: str, request_id: str) -> AsyncIterator[asyncio.Future[Result]]:
        """A future for the result of ``request_id``, resolved once the stream stores it while inside the block."""
        if self._sub is None:
            raise RuntimeError("ResultWaiter.expect before start()")
        subject = subjects.results(tenant, request_id)
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(subject, []).append(future)
        try:
            yield future
        finally:
            waits = self._waiting.get(subject, [])
            if future in waits:
                waits.remove(future)
            if not waits:
                self._waiting.pop(subject, None)

    async def _deliver(self, msg: Msg) -> None:
        waits = self._waiting.get(msg.subject)
        if not waits:
            return  # another process's request, or one nobody here waits for any more
        try:
            result = decode(msg.data, Result)
        except DecodeError:  # the producers check before publishing; never let one bad message stop delivery
            log.warning("undecodable result on %s", msg.subject)
            return
        for future in waits:
            if not future.done():
                future.set_result(result)
