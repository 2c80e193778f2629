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
from ._metrics import Rollup, registry_for
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
        rollup: Rollup | None = None,
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
        self._tasks: list[asyncio.Task[None]] = []
        self._metrics_server: Any = None
        self.metrics_port: int | None = None
        self.owned: list[Callable[[], Awaitable[None]]] = []
        """What ``build`` opened itself (and ``stop`` closes); injected parts belong to the caller."""

    def _usage_lines(self, data: bytes) -> list[Line]:
        return self.pricer.usage(_decode(data, UsageEvent))

    def _result_lines(self, data: bytes) -> list[Line]:
        return [self.pricer.result(_decode(data, Result), now_ms=int(self.clock() * 1000))]

    async def start(self) -> None:
        for spec, to_lines in ((BILLING_USAGE, self._usage_lines), (BILLING_RESULTS, self._result_lines)):
            psub = await self.js.pull_subscribe_bind(spec.durable, spec.stream)
            self._tasks.append(asyncio.create_task(self._consume(spec, psub, to_lines), name=spec.durable))
        if self.settings.metrics_port is not None and self.rollup is not None:
            server, _ = start_http_server(
                self.settings.metrics_port, self.settings.metrics_host, registry_for(self.rollup)
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

    async def _consume(self, spec: ConsumerSpec, psub: Any, to_lines: Callable[[bytes], list[Line]]) -> None:
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
                    await self.handle(msgs, to_lines)
                except Exception:  # e.g. NATS unreachable mid-batch: what was not acked comes back after ack_wait
                    log.exception(
                        "batch of %d from %s failed; unacked events will be redelivered", len(msgs), spec.durable
                    )
        finally:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()

    async def handle(self, msgs: Sequence[Msg], to_lines: Callable[[bytes], list[Line]]) -> None:
        """One pulled batch: price each event, commit the good ones together, then ack; dead-letter the bad."""
        lines: list[Line] = []
        good: list[Msg] = []
        for msg in msgs:
            try:
                lines.extend(to_lines(msg.data))
                good.append(msg)
            except Unbillable as exc:
                await self._dead_letter(msg, exc)
            except Exception as exc:  # a bug must not turn one event into an endless redelivery loop
                log.exception("pricing failed on %s", msg.subject)
                await self._dead_letter(msg, Unbillable(ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}"))
        try:
            await self._commit(lines)
            await self._settle(lines)
        except Exception:
            log.exception("could not commit %d ledger lines; they will be redelivered", len(lines))
            for msg in good:
                await msg.nak(delay=1.0)
            return
        for msg in good:
            await msg.ack()

    async def _commit(self, lines: list[Line]) -> None:
        if self.rollup is None:
            await asyncio.to_thread(self.ledger.append, lines)
        elif lines:
            self.rollup.apply(*await asyncio.to_thread(self.ledger.append_and_diff, lines))

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
        """Bring the budgets of the batch's tenants and API keys up to the ledger; close finished requests'
        reservations (a key's budget is settled from the key's own lines)."""
        finished: dict[tuple[str, str | None], list[str]] = {}
        for line in lines:
            for owner in {(line.tenant, None), (line.tenant, line.api_key_id)}:
                finished.setdefault(owner, [])
                if line.kind == "result":
                    finished[owner].append(line.request_id)
        for (tenant, key), request_ids in finished.items():
            await self.budgets.settle(tenant, request_ids, spent_since=self._spent_since(tenant, key), api_key_id=key)

    def _spent_since(self, tenant: str, api_key_id: str | None) -> Callable[[int], Any]:
        async def spent(since_ms: int) -> Decimal:
            spent = await asyncio.to_thread(self.ledger.spent_nusd, tenant, since_ms, api_key_id=api_key_id)
            return Decimal(spent) / NANO

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
        cpu_usd_per_hour=Decimal(settings.cpu_usd_per_hour),
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
    rollup = None
    if settings.metrics_port is not None:  # the one full pass: later commits move the sums
        rollup = Rollup()
        rollup.add(await asyncio.to_thread(ledger.request_totals))
    billing = Billing(settings, nc, ledger, pricer_for(settings, catalog), budgets, clock, rollup)
    billing.owned = owned
    return billing
