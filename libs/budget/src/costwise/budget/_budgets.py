"""Budgets in a JetStream key-value bucket, changed only by compare-and-set so concurrent admissions never race."""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from decimal import Decimal

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from costwise.contracts.subjects import BUDGETS

from ._state import Admission, BudgetExceeded, BudgetState, Period, Reservation

__all__ = ["Budgets", "open_budgets"]

_TENANT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # the contracts' Token: also a valid KV key
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(BudgetState).decode


class Budgets:
    """Per-tenant budgets: admit (reserve) before spending, settle from the ledger after.

    Every change is read → compute → ``update(last=revision)``; a concurrent writer makes the update fail and
    the change is recomputed on the fresh state. So 50 admissions racing for the last dollars of a budget
    reserve at most what the limit allows, and the only overshoot is actual cost beyond an estimate.
    """

    def __init__(
        self,
        kv: KeyValue,
        *,
        clock: Callable[[], float] = time.time,
        reservation_ttl_s: float = 3600,
        absent_ttl_s: float = 1.0,
    ) -> None:
        self.kv = kv
        self.clock = clock
        self.reservation_ttl_ms = int(reservation_ttl_s * 1000)
        # Most tenants have no budget: remembering that for a second saves the router a KV round trip per
        # request; a budget set meanwhile (by another process) applies within ``absent_ttl_s``.
        self.absent_ttl_s = absent_ttl_s
        self._absent_until: dict[str, float] = {}

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def state(self, tenant: str) -> BudgetState | None:
        """The tenant's budget as of now (period rolled, stale reservations dropped), or ``None`` if it has none."""
        found = await self._get(tenant)
        return None if found is None else found[0].rolled(self._now_ms(), self.reservation_ttl_ms)

    async def set_limit(self, tenant: str, limit_usd: Decimal, period: Period) -> BudgetState:
        """Create or change a tenant's budget (spend and reservations of the current period are kept)."""
        if limit_usd < 0:
            raise ValueError("a budget cannot be negative")
        self._absent_until.pop(tenant, None)
        while True:
            found = await self._get(tenant)
            now = self._now_ms()
            if found is None:
                state = BudgetState(tenant=tenant, limit_usd=limit_usd, period=period, period_start_ms=0)
                state = state.rolled(now, self.reservation_ttl_ms)
                if await self._write(tenant, state, None):
                    return state
                continue
            current, revision = found
            state = msgspec.structs.replace(current, limit_usd=limit_usd, period=period)
            state = state.rolled(now, self.reservation_ttl_ms)
            if await self._write(tenant, state, revision):
                return state

    async def admit(self, tenant: str, request_id: str, estimate_usd: Decimal) -> Admission | BudgetExceeded:
        """Reserve ``estimate_usd`` for ``request_id`` if the budget can cover it, else a typed rejection.

        Call before any spend (the router, before it publishes a job). A tenant without a budget is admitted.
        Admitting the same request again replaces its reservation (a redelivered request is not charged twice).
        """
        if estimate_usd < 0:
            raise ValueError("an estimate cannot be negative")
        unlimited = Admission(tenant=tenant, request_id=request_id, reserved_usd=Decimal(0), remaining_usd=None)
        if self._absent_until.get(tenant, 0.0) > self.clock():
            return unlimited
        while True:
            found = await self._get(tenant)
            if found is None:
                if len(self._absent_until) > 100_000:  # bounded: forget them all, each costs one lookup again
                    self._absent_until.clear()
                self._absent_until[tenant] = self.clock() + self.absent_ttl_s
                return unlimited
            current, revision = found
            state = current.rolled(self._now_ms(), self.reservation_ttl_ms)
            others = {rid: r for rid, r in state.reservations.items() if rid != request_id}
            state = msgspec.structs.replace(state, reservations=others)
            if state.remaining_usd < estimate_usd:
                return _rejection(state, request_id, estimate_usd)
            held = Reservation(usd=estimate_usd, ts_ms=self._now_ms())
            state = msgspec.structs.replace(state, reservations={**others, request_id: held})
            if await self._write(tenant, state, revision):
                return Admission(
                    tenant=tenant, request_id=request_id, reserved_usd=estimate_usd, remaining_usd=state.remaining_usd
                )

    async def release(self, tenant: str, request_id: str) -> None:
        """Drop a reservation without spend (e.g. the job could not be published)."""
        await self.settle(tenant, [request_id], spent_since=None)

    async def settle(
        self,
        tenant: str,
        request_ids: Iterable[str],
        *,
        spent_since: Callable[[int], Awaitable[Decimal]] | None,
    ) -> BudgetState | None:
        """Close ``request_ids``' reservations and set spend to the ledger's total for the period.

        ``spent_since(period_start_ms)`` asks the ledger; spend only grows within a period, so a stale answer
        from a concurrent settler never lowers it and settling the same requests twice changes nothing.
        """
        done = set(request_ids)
        while True:
            found = await self._get(tenant)
            if found is None:
                return None
            current, revision = found
            state = current.rolled(self._now_ms(), self.reservation_ttl_ms)
            spent = state.spent_usd
            if spent_since is not None:
                spent = max(spent, await spent_since(state.period_start_ms))
            open_ = {rid: r for rid, r in state.reservations.items() if rid not in done}
            state = msgspec.structs.replace(state, spent_usd=spent, reservations=open_)
            if state == current or await self._write(tenant, state, revision):
                return state

    async def _get(self, tenant: str) -> tuple[BudgetState, int] | None:
        if not _TENANT.match(tenant):
            raise ValueError(f"not a tenant name: {tenant[:80]!r} (letters, digits, _ and -, at most 64)")
        try:
            entry = await self.kv.get(tenant)
        except KeyNotFoundError:  # also a deleted key
            return None
        if entry.value is None or entry.revision is None:
            return None
        return _decode(entry.value), entry.revision

    async def _write(self, tenant: str, state: BudgetState, revision: int | None) -> bool:
        """Compare-and-set; ``False`` (after a short jittered pause) when another writer got there first."""
        try:
            if revision is None:
                await self.kv.create(tenant, _encode(state))
            else:
                await self.kv.update(tenant, _encode(state), last=revision)
        except KeyWrongLastSequenceError:
            await asyncio.sleep(random.uniform(0, 0.005))
            return False
        return True


def _rejection(state: BudgetState, request_id: str, estimate_usd: Decimal) -> BudgetExceeded:
    return BudgetExceeded(
        tenant=state.tenant,
        request_id=request_id,
        estimate_usd=estimate_usd,
        limit_usd=state.limit_usd,
        spent_usd=state.spent_usd,
        reserved_usd=state.reserved_usd,
        period=state.period,
    )


async def open_budgets(
    js: JetStreamContext,
    *,
    clock: Callable[[], float] = time.time,
    reservation_ttl_s: float = 3600,
    absent_ttl_s: float = 1.0,
) -> Budgets:
    """The budgets in the ``costwise-budgets`` bucket (provisioned by ``costwise.messaging.provision``)."""
    kv = await js.key_value(BUDGETS.bucket)
    return Budgets(kv, clock=clock, reservation_ttl_s=reservation_ttl_s, absent_ttl_s=absent_ttl_s)
