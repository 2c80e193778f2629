"""This worker's own job queue: jobs the router sends here because this worker served their prefix last.

It sits beside the pool's shared queue. Nothing may be lost when the worker leaves: on SIGTERM it hands
its queue back to the pool (``hand_back``); after a SIGKILL the server deletes the idle consumer
(``inactive_threshold``) and the router's sweeper moves what is left to the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from costwise.contracts import subjects
from costwise.contracts.subjects import ConsumerSpec
from costwise.messaging import ensure_consumer, pull_into_slots, requeue

__all__ = ["OwnQueue"]

log = logging.getLogger("costwise.worker")


class OwnQueue:
    def __init__(self, js: JetStreamContext, spec: ConsumerSpec, pool: str) -> None:
        self.js = js
        self.spec = spec
        self.pool_subject = subjects.jobs(pool)
        self._psub: JetStreamContext.PullSubscription | None = None

    async def pull(
        self,
        *,
        free: Callable[[], int],
        freed: asyncio.Event,
        stopping: Callable[[], bool],
        admit: Callable[[Msg], Awaitable[None]],
    ) -> None:
        """Pull one job at a time while a slot is free, beside the pool's pull.

        One at a time keeps the pull request (what the router reads as "this worker can take a job") open
        whenever a slot is free; the two pulls together may admit one job beyond the free slots.
        """
        while not stopping():
            try:
                await ensure_consumer(self.js, self.spec)
                self._psub = await self.js.pull_subscribe_bind(self.spec.durable, self.spec.stream)
                await pull_into_slots(
                    self._psub, free=lambda: min(free(), 1), freed=freed, stopping=stopping, admit=admit
                )
            except (APIError, NatsTimeoutError):  # deleted while this worker was full (or a server hiccup)
                log.debug("own queue %s is gone; making it again", self.spec.durable, exc_info=True)
                await asyncio.sleep(0.1)
            finally:
                await self.unsubscribe()

    async def unsubscribe(self) -> None:
        if self._psub:  # explicitly: a registered pull subscription stalls the connection's drain
            await self._psub.unsubscribe()
            self._psub = None

    async def hand_back(self) -> int:
        """Give every job still queued for this worker to its pool. Call after the in-flight jobs were handed back.

        The consumer goes first, so routers stop choosing this worker and nothing more is delivered; a job a
        router still sends here afterwards has no consumer, and the router's sweeper moves it.
        """
        await self.unsubscribe()
        with contextlib.suppress(NotFoundError):
            await self.js.delete_consumer(self.spec.stream, self.spec.durable)
        moved = await requeue(self.js, self.spec.stream, self.spec.filter_subject, self.pool_subject)
        if moved:
            log.info("handed %d queued jobs of %s back to the pool", moved, self.spec.durable)
        return moved
