"""Composition root of billing: the only place it connects to anything."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from prometheus_client import start_http_server

from costwise.budget import Budgets, open_budgets
from costwise.catalog import Catalog, load_catalog
from costwise.contracts import DecodeError, ErrorCode, Result, UsageEvent, decode
from costwise.contracts.subjects import BILLING_RESULTS, BILLING_USAGE, ConsumerSpec
from costwise.messaging import connect, file_dead_letter, provision

from ._ledger import Ledger, Line, open_ledger
from ._metrics import registry_for
from ._pricing import NANO, Pricer, Unbillable
from .settings import BillingSettings

__all__ = ["Billing", "build"]

SERVICE = "billing"
CONSUMERS = (BILLING_USAGE, BILLING_RESULTS)
log = logging.getLogger("costwise.billing")


class Billing:
    """Pulls usage events and results, writes the ledger (one transaction per pulled batch), settles budgets."""

    def __init__(
        self,
        settings: BillingSettings,
        nc: Client,
        ledger: Ledger,
        pricer: Pricer,
        budgets: Budgets,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.nc = nc
        self.js = nc.jetstream()
        self.ledger = ledger
        self.pricer = pricer
        self.budgets = budgets
        self.clock = clock
        self._tasks: list[asyncio.Task[None]] = []
        self._metrics_server: Any = None
        self.metrics_port: int | None = None
        self.owned: list[Callable[[], Awaitable[None]]] = []
        """What ``build`` opened itself (and ``stop`` closes); injected parts belong to the caller."""

    def _usage_line(self, data: bytes) -> Line:
        return self.pricer.attempt(_decode(data, UsageEvent))

    def _result_line(self, data: bytes) -> Line:
        return self.pricer.result(_decode(data, Result), now_ms=int(self.clock() * 1000))

    async def start(self) -> None:
        for spec, to_line in ((BILLING_USAGE, self._usage_line), (BILLING_RESULTS, self._result_line)):
            psub = await self.js.pull_subscribe_bind(spec.durable, spec.stream)
            self._tasks.append(asyncio.create_task(self._consume(spec, psub, to_line), name=spec.durable))
        if self.settings.metrics_port is not None:
            server, _ = start_http_server(
                self.settings.metrics_port, self.settings.metrics_host, registry_for(self.ledger)
            )
            self._metrics_server, self.metrics_port = server, server.server_port

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
        for close in self.owned:
            await close()

    async def _consume(self, spec: ConsumerSpec, psub: Any, to_line: Callable[[bytes], Line]) -> None:
        try:
            while True:
                try:
                    msgs = await psub.fetch(self.settings.batch, timeout=1.0)
                except TimeoutError:  # nothing to bill: nats-py raises the builtin (asyncio) one here, not its own
                    continue
                except Exception:  # e.g. reconnecting: a dead consume task would stop billing silently
                    log.warning("fetch from %s failed; retrying", spec.durable, exc_info=True)
                    await asyncio.sleep(1.0)
                    continue
                try:
                    await self.handle(msgs, to_line)
                except Exception:  # e.g. NATS unreachable mid-batch: what was not acked comes back after ack_wait
                    log.exception(
                        "batch of %d from %s failed; unacked events will be redelivered", len(msgs), spec.durable
                    )
        finally:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()

    async def handle(self, msgs: Sequence[Msg], to_line: Callable[[bytes], Line]) -> None:
        """One pulled batch: price each event, commit the good ones together, then ack; dead-letter the bad."""
        lines: list[Line] = []
        good: list[Msg] = []
        for msg in msgs:
            try:
                lines.append(to_line(msg.data))
                good.append(msg)
            except Unbillable as exc:
                await self._dead_letter(msg, exc)
            except Exception as exc:  # a bug must not turn one event into an endless redelivery loop
                log.exception("pricing failed on %s", msg.subject)
                await self._dead_letter(msg, Unbillable(ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}"))
        try:
            await asyncio.to_thread(self.ledger.append, lines)
            await self._settle(lines)
        except Exception:
            log.exception("could not commit %d ledger lines; they will be redelivered", len(lines))
            for msg in good:
                await msg.nak(delay=1.0)
            return
        for msg in good:
            await msg.ack()

    async def _dead_letter(self, msg: Msg, exc: Unbillable) -> None:
        meta = msg.metadata
        await file_dead_letter(
            self.js,
            service=SERVICE,
            subject=msg.subject,
            data=msg.data,
            code=exc.code,
            reason=exc.reason,
            num_delivered=meta.num_delivered,
            stream_seq=meta.sequence.stream,
            reply=False,  # a usage event or a result is not a request: its caller must not get an error result
        )
        await msg.term()

    async def _settle(self, lines: Sequence[Line]) -> None:
        """Bring the budgets of the batch's tenants up to the ledger; close finished requests' reservations."""
        finished: dict[str, list[str]] = {}
        for line in lines:
            finished.setdefault(line.tenant, [])
            if line.kind == "result":
                finished[line.tenant].append(line.request_id)
        for tenant, request_ids in finished.items():
            await self.budgets.settle(tenant, request_ids, spent_since=self._spent_since(tenant))

    def _spent_since(self, tenant: str) -> Callable[[int], Any]:
        async def spent(since_ms: int) -> Decimal:
            return Decimal(await asyncio.to_thread(self.ledger.spent_nusd, tenant, since_ms)) / NANO

        return spent


def _decode(data: bytes, kind: type[Any]) -> Any:
    try:
        return decode(data, kind)
    except DecodeError as exc:
        raise Unbillable(ErrorCode.MALFORMED_MESSAGE, f"invalid {kind.__name__}: {exc}") from None


def pricer_for(settings: BillingSettings, catalog: Catalog) -> Pricer:
    return Pricer(
        catalog,
        exact_hit_usd=Decimal(settings.exact_hit_usd),
        semantic_hit_usd=Decimal(settings.semantic_hit_usd),
        tenants=frozenset(settings.tenants),
    )


async def build(
    settings: BillingSettings,
    *,
    nc: Client | None = None,
    catalog: Catalog | None = None,
    ledger: Ledger | None = None,
    clock: Callable[[], float] = time.time,
) -> Billing:
    """Provision billing's consumers, open (and migrate) the ledger and wire the consumers (``start()`` pulls)."""
    await provision(settings.nats_url, CONSUMERS, name=SERVICE)
    catalog = catalog or load_catalog(settings.catalog)
    owned: list[Callable[[], Awaitable[None]]] = []
    if ledger is None:
        ledger = await asyncio.to_thread(open_ledger, settings.database_url)
        owned.append(functools.partial(asyncio.to_thread, ledger.close))
    if nc is None:
        nc = await connect(settings.nats_url, name=SERVICE)
        owned.insert(0, nc.drain)
    budgets = await open_budgets(nc.jetstream(), clock=clock)
    billing = Billing(settings, nc, ledger, pricer_for(settings, catalog), budgets, clock)
    billing.owned = owned
    return billing
