"""Reading stored results the way every NATS user may, a tenant's own user included (``costwise nats-config``).

nats-py's ordered consumers are created on ``$JS.API.CONSUMER.CREATE.<stream>``, a subject that carries no filter:
a tenant's user may not send it, since allowing it would open every tenant's results. A consumer with a name and
exactly one filter subject is created on ``$JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>`` (nats-py's
``add_consumer`` picks that subject for such a config), which a tenant may send for filters under its own results.
It pushes to an inbox of the connection, so deliveries carry the connection's inbox prefix: the tenant's own
(``subjects.tenant_inbox``) on a tenant's connection, the only inbox its user may read.

What an ordered consumer did for its reader is done here: a message missed (a gap in the consumer's sequence) or a
consumer lost (no heartbeat; a node restarted) makes a new consumer that starts after the last message read.
"""

from __future__ import annotations

import asyncio
import logging

from nats.aio.client import Client as Nats
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, Header

from costwise.contracts import subjects
from costwise.messaging import queued_first

__all__ = ["ResultReader"]

log = logging.getLogger("costwise.client")

# How long the server keeps a reader no one listens to any more: readers are left to expire rather than deleted,
# because a tenant's user may not delete consumers (and a delete would cost every wait a round trip).
INACTIVE_S = 5.0
HEARTBEAT_S = 2.0
_LOST_AFTER_S = 3 * HEARTBEAT_S  # silence (no message, no heartbeat) that means the consumer is gone
_IDLE_HEARTBEAT = "100"


class ResultReader:
    """The results stream's messages on one filter subject (one result, or one tenant's wildcard), in order."""

    def __init__(self, nc: Nats, filter_subject: str, policy: DeliverPolicy) -> None:
        self._nc, self._filter, self._policy = nc, filter_subject, policy
        self._sub: Subscription | None = None
        self._consumer_seq = 0  # the last message read: a new consumer starts after its stream sequence
        self._stream_seq = 0

    async def open(self, *, timeout: float | None = None) -> ResultReader:
        """Create the consumer within ``timeout`` (the JetStream default if None); a refusal times out."""
        await self._consume(self._policy, timeout)
        return self

    async def close(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def next(self) -> Msg:
        """The next stored message (waits as long as it takes: bound it with a timeout around the call)."""
        while True:
            assert self._sub is not None, "ResultReader.next before open()"
            try:
                msg = await self._sub.next_msg(timeout=_LOST_AFTER_S)
            except TimeoutError:
                await self._restart("no heartbeat")
                continue
            status = msg.headers.get(Header.STATUS) if msg.headers else None
            if status is None and msg.metadata.sequence.consumer == self._consumer_seq + 1:
                self._consumer_seq, self._stream_seq = msg.metadata.sequence.consumer, msg.metadata.sequence.stream
                return msg
            if status == _IDLE_HEARTBEAT and _last_consumer_seq(msg) in (None, self._consumer_seq):
                continue  # idle, and nothing was missed
            await self._restart(f"status {status}" if status else "a missed message")

    async def _consume(self, policy: DeliverPolicy, timeout: float | None, start: int | None = None) -> None:
        inbox = self._nc.new_inbox()
        sub = queued_first(await self._nc.subscribe(inbox))  # first: the consumer's first push must find a listener
        config = ConsumerConfig(
            name=inbox.rsplit(".", 1)[1],  # the inbox's random token: unique, and a valid consumer name
            filter_subject=self._filter,
            deliver_subject=inbox,
            deliver_policy=policy,
            opt_start_seq=start,
            # Pushed once, never redelivered, nothing to ack (a tenant may not publish acks). No flow control
            # either: answering it means publishing to $JS.FC, which a tenant may not.
            ack_policy=AckPolicy.NONE,
            idle_heartbeat=HEARTBEAT_S,
            inactive_threshold=INACTIVE_S,
            num_replicas=1,  # a throwaway reader, as cheap as nats-py's ordered consumer
            mem_storage=True,
        )
        try:
            info = await self._nc.jetstream().add_consumer(subjects.RESULTS.name, config, timeout=timeout)
        except BaseException:
            await sub.unsubscribe()
            raise
        await self.close()  # the previous consumer (if any) pushes to no one from now on, and expires
        self._sub, self._consumer_seq = sub, 0
        # Where a new consumer starts: for DeliverPolicy.NEW, the stream's last message when it was made.
        self._stream_seq = max(self._stream_seq, info.delivered.stream_seq if info.delivered else 0)

    async def _restart(self, why: str) -> None:
        """A new consumer from the message after the last one read (retried while the server cannot make one)."""
        log.info("results reader on %s starts over after stream seq %d: %s", self._filter, self._stream_seq, why)
        while True:
            try:
                await self._consume(DeliverPolicy.BY_START_SEQUENCE, None, self._stream_seq + 1)
                return
            except TimeoutError:  # no meta leader yet (a cluster electing one): try again
                await asyncio.sleep(0.5)


def _last_consumer_seq(heartbeat: Msg) -> int | None:
    last = (heartbeat.headers or {}).get("Nats-Last-Consumer")
    return int(last) if last else None
