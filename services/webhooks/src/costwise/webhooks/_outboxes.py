"""The tenants' outboxes: one consumer each, created at run time, all sharing one pool of HTTP slots."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from opentelemetry.trace import Tracer

from costwise.contracts import Result, subjects
from costwise.contracts.subjects import WEBHOOKS
from costwise.messaging import Consumer, Slots, ensure_consumer

from .settings import WebhooksSettings

__all__ = ["Outboxes", "outbox_tenants"]

log = logging.getLogger("costwise.webhooks")
_TENANT_PREFIX = subjects.webhooks_tenant("").durable


class Outboxes:
    """Pulls every tenant outbox this instance adopted; at most ``concurrency`` calls run at once.

    A pull asks for a message only while a slot is free, but idle outboxes each have a pull waiting: messages
    arriving for many of them at once may outnumber the free slots, and those wait for one (kept in progress,
    so JetStream does not hand them out again meanwhile)."""

    def __init__(
        self,
        js: JetStreamContext,
        deliver: Callable[[Result], Awaitable[None]],
        *,
        settings: WebhooksSettings,
        service: str,
        tracer: Tracer | None,
    ) -> None:
        self.js = js
        self.deliver = deliver
        self.settings = settings
        self.service = service
        self.tracer = tracer
        self.slots = Slots(settings.concurrency)
        """Room for HTTP calls in flight, shared by every outbox."""
        self.consumers: dict[str, Consumer] = {}
        self._gone: list[Consumer] = []  # replaced after their consumer was deleted; stopped with the rest
        self._adopting = asyncio.Lock()
        self._stopping = False
        self._rescan: asyncio.Task[None] | None = None

    def pulls(self, tenant: str) -> bool:
        """Whether ``tenant``'s outbox is being pulled (a pull ends when its consumer is deleted)."""
        consumer = self.consumers.get(tenant)
        return consumer is not None and consumer.pulling is not None and not consumer.pulling.done()

    async def adopt(self, tenant: str) -> None:
        """Make sure ``tenant``'s outbox consumer exists and this instance pulls from it."""
        if self.pulls(tenant):
            return
        async with self._adopting:  # a result and a rescan adopting one tenant must start one consumer
            if self._stopping or self.pulls(tenant):
                return
            spec = subjects.webhooks_tenant(tenant, ack_wait_s=self.settings.ack_wait_s)
            await ensure_consumer(self.js, spec)
            # most=1: the outbox hands out one message at a time anyway (max_ack_pending=1, to keep order)
            consumer = Consumer(
                spec,
                self.deliver,
                service=self.service,
                slots=self.slots,
                most=1,
                fetch_s=self.settings.poll_s,  # one pull request per poll_s for an idle tenant, not per 0.5 s
                tracer=self.tracer,
            )
            await consumer.start(self.js)
            assert consumer.pulling is not None, "started"
            consumer.pulling.add_done_callback(functools.partial(_ended, spec.durable))
            if (old := self.consumers.pop(tenant, None)) is not None:
                self._gone.append(old)
            self.consumers[tenant] = consumer

    def start(self) -> None:
        """Adopt the outboxes that exist now, and look again every ``rescan_s``."""
        self._rescan = asyncio.create_task(self._rescan_loop(), name="webhooks rescan")

    async def _rescan_loop(self) -> None:
        """Adopt outboxes created elsewhere (another instance's results, a replay) or whose pull ended (a deleted
        outbox is not listed: the tenant's next result creates it again)."""
        while not self._stopping:  # not only cancelled: asyncio.wait_for (in nats-py) may swallow a cancel on 3.11
            try:
                for tenant in await outbox_tenants(self.js):
                    await self.adopt(tenant)
            except NatsError as exc:
                log.warning("looking for tenant outboxes failed: %r", exc)
            await asyncio.sleep(self.settings.rescan_s)

    async def stop(self) -> None:
        """Stop adopting, then stop every outbox at once (one by one, the last would go on delivering while the
        first wait): each attempt in hand may finish, then what is left is handed back."""
        async with self._adopting:
            self._stopping = True
        if self._rescan is not None:
            self._rescan.cancel()
            await asyncio.gather(self._rescan, return_exceptions=True)
        grace_s = self.settings.attempt_timeout_s + 5
        await asyncio.gather(*(c.stop(grace_s) for c in [*self.consumers.values(), *self._gone]))


async def outbox_tenants(js: JetStreamContext) -> list[str]:
    """The tenants whose outbox has a consumer (this instance's or another's)."""
    names: list[str] = []
    offset = 0
    while batch := await js.consumers_info(WEBHOOKS.name, offset=offset):
        names += [c.name for c in batch]
        offset += len(batch)
    return [n.removeprefix(_TENANT_PREFIX) for n in names if n.startswith(_TENANT_PREFIX)]


def _ended(durable: str, pulling: asyncio.Task[None]) -> None:
    # Stopping cancels the pull or ends it cleanly; anything else (its consumer deleted) is worth a line.
    if not pulling.cancelled() and (exc := pulling.exception()) is not None:
        log.warning("stopped pulling %s (%r); the tenant's next result (or a replay) re-creates it", durable, exc)
