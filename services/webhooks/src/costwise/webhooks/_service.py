"""The webhooks service's handlers: a result with a callback is copied into its tenant's outbox; each outbox is
delivered in order.

results ──(durable webhooks-results, one at a time)──▶ outbox costwise.v1.webhooks.<tenant>
outbox  ──(durable webhooks-tenant-<tenant>, max_ack_pending=1)──▶ signed POST; nak(delay) to retry
"""

from __future__ import annotations

import contextlib

from nats.aio.client import Client
from opentelemetry.trace import Tracer

from costwise.contracts import ErrorCode, Result, subjects
from costwise.contracts.subjects import WEBHOOKS_RESULTS
from costwise.messaging import Consumer, ack_current, forward_current

from ._outboxes import Outboxes
from ._policy import Attempt, stale_for
from .delivery import SERVICE, Delivery, traced
from .settings import WebhooksSettings

__all__ = ["SERVICE", "Webhooks"]


class Webhooks:
    """Moves results with a callback into per-tenant outboxes and delivers each outbox in order."""

    def __init__(
        self,
        settings: WebhooksSettings,
        nc: Client,
        delivery: Delivery,
        *,
        tracer: Tracer | None,
        owned: contextlib.AsyncExitStack,
    ) -> None:
        self.settings = settings
        self.nc = nc
        self.js = nc.jetstream()
        self.delivery = delivery
        self.tracer = tracer
        self._owned = owned
        """What ``build`` opened; ``start`` adds what it starts, so ``stop`` closes it all in reverse."""
        # No recreate: made again, it would start from the first result the stream keeps (days of them).
        self.results = Consumer(WEBHOOKS_RESULTS, self.on_result, service=SERVICE, tracer=tracer)
        self.outboxes = Outboxes(self.js, delivery.handle, settings=settings, service=SERVICE, tracer=tracer)

    async def on_result(self, result: Result) -> None:
        """Copy a result that has a callback into its tenant's outbox (deduplicated per request)."""
        if (age_s := stale_for(result, self.delivery.clock(), self.settings)) is not None:
            why = Attempt(error=f"completed {age_s:.0f} s ago, before the webhooks service could send it")
            await self.delivery.give_up(result, ErrorCode.CALLBACK_FAILED, why, attempts=0)
            return
        if result.callback_url is not None:
            await self.outboxes.adopt(result.tenant)
            msg_id = subjects.dedup_id(result.tenant, result.request_id)
            with traced(self.tracer, "webhooks enqueue"):
                await forward_current(self.js, subjects.webhooks(result.tenant), msg_id=msg_id)
        await ack_current()

    async def adopt(self, tenant: str) -> None:
        """Make sure ``tenant``'s outbox consumer exists and this instance pulls from it."""
        await self.outboxes.adopt(tenant)

    async def start(self) -> None:
        # Pushed first, so stopped last: after the results can no longer adopt an outbox.
        self.outboxes.start()
        self._owned.push_async_callback(self.outboxes.stop)
        await self.results.start(self.js)
        self._owned.push_async_callback(self.results.stop)

    async def stop(self) -> None:
        await self._owned.aclose()
