"""Billing's handlers: a pulled batch of usage events or results is one ledger transaction, then budgets settle."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, TypeVar

from nats.aio.client import Client
from prometheus_client import start_http_server

from costwise.budget import Budgets
from costwise.contracts import Clock, Result, UsageEvent, now_ms
from costwise.contracts.subjects import BILLING_RESULTS, BILLING_USAGE
from costwise.messaging import Consumer, Refusal

from ._batch import priced, settlements
from ._ledger import Ledger, Line
from ._metrics import Rollup, registry_for
from ._pricing import NANO, Pricer
from .settings import BillingSettings

__all__ = ["SERVICE", "Billing"]

SERVICE = "billing"
Event = TypeVar("Event")


class Billing:
    """Pulls usage events and results, writes the ledger (one transaction per pulled batch), settles budgets."""

    def __init__(
        self,
        settings: BillingSettings,
        nc: Client,
        ledger: Ledger,
        pricer: Pricer,
        budgets: Budgets,
        *,
        clock: Clock,
        rollup: Rollup | None,
        owned: contextlib.AsyncExitStack,
    ) -> None:
        self.settings = settings
        self.nc = nc
        self.js = nc.jetstream()
        self.ledger = ledger
        self.pricer = pricer
        self.budgets = budgets
        self.clock = clock
        self.rollup = rollup
        """Running sums for the metrics (only with ``metrics_port``): moved by every commit."""
        self.metrics_port: int | None = None
        """The port the metrics are served on, once started (``metrics_port=0`` picks a free one)."""
        self._owned = owned
        """What ``build`` opened; ``start`` adds what it starts, so ``stop`` closes it all in reverse."""
        self.consumers = [
            Consumer(spec, handler, service=SERVICE, batch=settings.batch)
            for spec, handler in ((BILLING_USAGE, self.on_usage), (BILLING_RESULTS, self.on_results))
        ]

    async def on_usage(self, events: list[UsageEvent]) -> Mapping[int, Refusal]:
        return await self._bill(events, self.pricer.usage)

    async def on_results(self, results: list[Result]) -> Mapping[int, Refusal]:
        return await self._bill(results, self._result_lines)

    def _result_lines(self, result: Result) -> list[Line]:
        return [self.pricer.result(result, now_ms=now_ms(self.clock))]

    async def _bill(self, events: list[Event], to_lines: Callable[[Event], list[Line]]) -> Mapping[int, Refusal]:
        """Price the batch, commit its lines together, settle its budgets; the consumer dead-letters the refused
        events and acks the rest only after this returns (if it raises, the whole batch is redelivered)."""
        lines, refusals = priced(events, to_lines)
        await self._commit(lines)
        await self._settle(lines)
        return refusals

    async def _commit(self, lines: list[Line]) -> None:
        if self.rollup is None:
            await asyncio.to_thread(self.ledger.append, lines)
        elif lines:
            self.rollup.apply(*await asyncio.to_thread(self.ledger.append_and_diff, lines))

    async def _settle(self, lines: Sequence[Line]) -> None:
        """Bring the budgets the batch touched up to the ledger and close its finished requests' reservations."""
        for (tenant, key), request_ids in settlements(lines).items():
            await self.budgets.settle(tenant, request_ids, spent_since=self._spent_since(tenant, key), api_key_id=key)

    def _spent_since(self, tenant: str, api_key_id: str | None) -> Callable[[int], Any]:
        async def spent(since_ms: int) -> Decimal:
            spent = await asyncio.to_thread(self.ledger.spent_nusd, tenant, since_ms, api_key_id=api_key_id)
            return Decimal(spent) / NANO

        return spent

    async def start(self) -> None:
        for consumer in self.consumers:
            await consumer.start(self.js)
            self._owned.push_async_callback(consumer.stop)
        if self.settings.metrics_port is not None and self.rollup is not None:
            server, _ = start_http_server(
                self.settings.metrics_port, self.settings.metrics_host, registry_for(self.rollup)
            )
            self.metrics_port = server.server_port
            self._owned.push_async_callback(_shut_down, server)

    async def stop(self) -> None:
        await self._owned.aclose()


async def _shut_down(server: Any) -> None:
    # shutdown() waits for the server's poll loop (up to half a second): not on the event loop.
    await asyncio.to_thread(server.shutdown)
    server.server_close()
