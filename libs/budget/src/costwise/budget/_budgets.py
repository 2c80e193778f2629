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

from costwise.contracts import Clock, now_ms
from costwise.contracts.subjects import BUDGETS

from ._state import Admission, BudgetExceeded, BudgetState, Period, Reservation

__all__ = ["Budgets", "open_budgets"]

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # the contracts' Token: also a valid KV key token
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(BudgetState).decode


class Budgets:
    """Per-tenant and per-API-key budgets: admit (reserve) before spending, settle from the ledger after.

    Every change is read → compute → ``update(last=revision)``; a concurrent writer makes the update fail and
    the change is recomputed on the fresh state. So 50 admissions racing for the last dollars of a budget
    reserve at most what the limit allows, and the only overshoot is actual cost beyond an estimate.
    A tenant's budget is the key ``<tenant>``; an API key's is ``<tenant>.key.<key id>``: a tenant name has no
    dot, so the two never collide, and a key id is only ever looked up under the request's own tenant.
    """

    def __init__(
        self,
        kv: KeyValue,
        *,
        clock: Clock = time.time,
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
        return now_ms(self.clock)

    async def state(self, tenant: str, *, api_key_id: str | None = None) -> BudgetState | None:
        """The budget as of now (period rolled, stale reservations dropped), or ``None`` if there is none."""
        found = await self._get(_entry(tenant, api_key_id))
        return None if found is None else found[0].rolled(self._now_ms(), self.reservation_ttl_ms)

    async def set_limit(
        self, tenant: str, limit_usd: Decimal, period: Period, *, api_key_id: str | None = None
    ) -> BudgetState:
        """Create or change a tenant's (or one of its keys') budget; spend and reservations of the period are kept."""
        if limit_usd < 0:
            raise ValueError("a budget cannot be negative")
        entry = _entry(tenant, api_key_id)
        self._absent_until.pop(entry, None)
        while True:
            found = await self._get(entry)
            if found is None:
                current = BudgetState(
                    tenant=tenant, api_key_id=api_key_id, limit_usd=limit_usd, period=period, period_start_ms=0
                )
                revision = None
            else:
                current, revision = found
            state = msgspec.structs.replace(current, limit_usd=limit_usd, period=period)
            state = state.rolled(self._now_ms(), self.reservation_ttl_ms)
            if await self._write(entry, state, revision):
                return state

    async def admit(
        self, tenant: str, request_id: str, estimate_usd: Decimal, *, api_key_id: str | None = None
    ) -> Admission | BudgetExceeded:
        """Reserve ``estimate_usd`` for ``request_id`` if the budgets can cover it, else a typed rejection.

        Call before any spend (the gateway before it queues the request, the router before it publishes each
        attempt's job, both with the request's id). The request's API key budget (if it has a key with one) is
        asked first, then the tenant's; both must allow it, and a tenant refusal releases what the key reserved.
        No budget = unlimited. Admitting the same request again replaces its reservations (the router's
        replaces the gateway's; a redelivered request is not charged twice).
        """
        if estimate_usd < 0:
            raise ValueError("an estimate cannot be negative")
        key: Admission | None = None
        if api_key_id is not None:
            verdict = await self._admit(tenant, _entry(tenant, api_key_id), request_id, estimate_usd)
            if isinstance(verdict, BudgetExceeded):
                return verdict
            key = verdict
        verdict = await self._admit(tenant, _entry(tenant, None), request_id, estimate_usd)
        if isinstance(verdict, BudgetExceeded):
            if key is not None and key.remaining_usd is not None:
                await self.settle(tenant, [request_id], spent_since=None, api_key_id=api_key_id)
            return verdict
        left = [a.remaining_usd for a in (key, verdict) if a is not None and a.remaining_usd is not None]
        return msgspec.structs.replace(verdict, remaining_usd=min(left) if left else None)

    async def _admit(
        self, tenant: str, entry: str, request_id: str, estimate_usd: Decimal
    ) -> Admission | BudgetExceeded:
        unlimited = Admission(tenant=tenant, request_id=request_id, reserved_usd=Decimal(0), remaining_usd=None)
        if self._absent_until.get(entry, 0.0) > self.clock():
            return unlimited
        while True:
            found = await self._get(entry)
            if found is None:
                if len(self._absent_until) > 100_000:  # bounded: forget them all, each costs one lookup again
                    self._absent_until.clear()
                self._absent_until[entry] = self.clock() + self.absent_ttl_s
                return unlimited
            current, revision = found
            state = current.rolled(self._now_ms(), self.reservation_ttl_ms)
            others = {rid: r for rid, r in state.reservations.items() if rid != request_id}
            state = msgspec.structs.replace(state, reservations=others)
            if state.remaining_usd < estimate_usd:
                return _rejection(state, request_id, estimate_usd)
            held = Reservation(usd=estimate_usd, ts_ms=self._now_ms())
            state = msgspec.structs.replace(state, reservations={**others, request_id: held})
            if await self._write(entry, state, revision):
                return Admission(
                    tenant=tenant, request_id=request_id, reserved_usd=estimate_usd, remaining_usd=state.remaining_usd
                )

    async def release(self, tenant: str, request_id: str, *, api_key_id: str | None = None) -> None:
        """Drop a request's reservations without spend (e.g. the job could not be published)."""
        await self.settle(tenant, [request_id], spent_since=None)
        if api_key_id is not None:
            await self.settle(tenant, [request_id], spent_since=None, api_key_id=api_key_id)

    async def settle(
        self,
        tenant: str,
        request_ids: Iterable[str],
        *,
        spent_since: Callable[[int], Awaitable[Decimal]] | None,
        api_key_id: str | None = None,
    ) -> BudgetState | None:
        """Close ``request_ids``' reservations and set spend to the ledger's total for the period.

        ``spent_since(period_start_ms)`` asks the ledger (for the key's spend, on a key's budget); spend only
        grows within a period, so a stale answer from a concurrent settler never lowers it and settling the
        same requests twice changes nothing.
        """
        entry = _entry(tenant, api_key_id)
        done = set(request_ids)
        while True:
            found = await self._get(entry)
            if found is None:
                return None
            current, revision = found
            state = current.rolled(self._now_ms(), self.reservation_ttl_ms)
            spent = state.spent_usd
            if spent_since is not None:
                spent = max(spent, await spent_since(state.period_start_ms))
            open_ = {rid: r for rid, r in state.reservations.items() if rid not in done}
            state = msgspec.structs.replace(state, spent_usd=spent, reservations=open_)
            if state == current or await self._write(entry, state, revision):
                return state

    async def _get(self, entry: str) -> tuple[BudgetState, int] | None:
        try:
            found = await self.kv.get(entry)
        except KeyNotFoundError:  # also a deleted key
            return None
        if found.value is None or found.revision is None:
            return None
        return _decode(found.value), found.revision

    async def _write(self, entry: str, state: BudgetState, revision: int | None) -> bool:
        """Compare-and-set; ``False`` (after a short jittered pause) when another writer got there first."""
        try:
            if revision is None:
                await self.kv.create(entry, _encode(state))
            else:
                await self.kv.update(entry, _encode(state), last=revision)
        except KeyWrongLastSequenceError:
            await asyncio.sleep(random.uniform(0, 0.005))
            return False
        return True


def _entry(tenant: str, api_key_id: str | None) -> str:
    """The bucket key of a tenant's budget, or of one of its API keys'."""
    if not _TOKEN.match(tenant):
        raise ValueError(f"not a tenant name: {tenant[:80]!r} (letters, digits, _ and -, at most 64)")
    if api_key_id is None:
        return tenant
    if not _TOKEN.match(api_key_id):
        raise ValueError(f"not an API key id: {api_key_id[:80]!r} (letters, digits, _ and -, at most 64)")
    return f"{tenant}.key.{api_key_id}"


def _rejection(state: BudgetState, request_id: str, estimate_usd: Decimal) -> BudgetExceeded:
    return BudgetExceeded(
        tenant=state.tenant,
        request_id=request_id,
        estimate_usd=estimate_usd,
        limit_usd=state.limit_usd,
        spent_usd=state.spent_usd,
        reserved_usd=state.reserved_usd,
        period=state.period,
        api_key_id=state.api_key_id,
    )


async def open_budgets(
    js: JetStreamContext,
    *,
    clock: Clock = time.time,
    reservation_ttl_s: float = 3600,
    absent_ttl_s: float = 1.0,
) -> Budgets:
    """The budgets in the ``costwise-budgets`` bucket (provisioned by ``costwise.messaging.provision``)."""
    kv = await js.key_value(BUDGETS.bucket)
    return Budgets(kv, clock=clock, reservation_ttl_s=reservation_ttl_s, absent_ttl_s=absent_ttl_s)
