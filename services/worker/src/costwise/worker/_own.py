"""This worker's own job queue: jobs the router sends here because this worker served their prefix last.

It sits beside the pool's shared queue and is pulled one job at a time, sharing the engine's slots (see
``_service``). Nothing may be lost when the worker leaves: on SIGTERM it hands its queue back to the pool
(``hand_back``); after a SIGKILL the server deletes the idle consumer (``inactive_threshold``) and the
router's sweeper moves what is left to the pool.
"""

from __future__ import annotations

import contextlib
import logging

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from costwise.contracts import subjects
from costwise.contracts.subjects import ConsumerSpec
from costwise.messaging import requeue

__all__ = ["OwnQueue"]

log = logging.getLogger("costwise.worker")


class OwnQueue:
    def __init__(self, js: JetStreamContext, spec: ConsumerSpec, pool: str) -> None:
        self.js = js
        self.spec = spec
        self.pool_subject = subjects.jobs(pool)

    async def hand_back(self) -> int:
        """Give every job still queued for this worker to its pool. Call once its consumer stopped pulling and
        the jobs in flight were handed back (their acks need the consumer).

        The consumer goes first, so routers stop choosing this worker and nothing more is delivered; a job a
        router still sends here afterwards has no consumer, and the router's sweeper moves it.
        """
        with contextlib.suppress(NotFoundError):
            await self.js.delete_consumer(self.spec.stream, self.spec.durable)
        moved = await requeue(self.js, self.spec.stream, self.spec.filter_subject, self.pool_subject)
        if moved:
            log.info("handed %d queued jobs of %s back to the pool", moved, self.spec.durable)
        return moved
