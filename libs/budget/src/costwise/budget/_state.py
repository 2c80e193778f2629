"""What the budget bucket holds per tenant, and the pure rules that change it."""

from __future__ import annotations

import calendar
import datetime as dt
from decimal import Decimal
from typing import Literal

import msgspec

from costwise.contracts import ErrorCode

__all__ = ["Admission", "BudgetExceeded", "BudgetState", "Period", "Reservation", "period_start_ms"]

Period = Literal["day", "month", "total"]
Money = Decimal  # msgspec cannot constrain decimals; set_limit and admit check signs


class Reservation(msgspec.Struct, frozen=True, kw_only=True):
    """Money held for an admitted request until billing settles it (or it expires)."""

    usd: Money
    ts_ms: int


class BudgetState(msgspec.Struct, frozen=True, kw_only=True, tag="budget_state.v1", tag_field="type"):
    """One tenant's (or one of its API keys') budget: the limit per period, what the ledger says was spent,
    and open reservations.

    ``spent_usd`` is written only by billing, from the ledger (never incremented), so settling twice is harmless.
    """

    tenant: str
    limit_usd: Money
    period: Period
    period_start_ms: int
    spent_usd: Money = Decimal(0)
    reservations: dict[str, Reservation] = {}
    api_key_id: str | None = None
    """Set on an API key's budget (which applies on top of its tenant's)."""

    @property
    def reserved_usd(self) -> Decimal:
        return sum((r.usd for r in self.reservations.values()), Decimal(0))

    @property
    def remaining_usd(self) -> Decimal:
        return self.limit_usd - self.spent_usd - self.reserved_usd

    def rolled(self, now_ms: int, reservation_ttl_ms: int) -> BudgetState:
        """This state at ``now_ms``: a new period starts from zero spend; stale reservations are dropped."""
        start = period_start_ms(self.period, now_ms)
        live = {rid: r for rid, r in self.reservations.items() if r.ts_ms >= now_ms - reservation_ttl_ms}
        if start == self.period_start_ms and len(live) == len(self.reservations):
            return self
        spent = self.spent_usd if start == self.period_start_ms else Decimal(0)
        return msgspec.structs.replace(self, period_start_ms=start, spent_usd=spent, reservations=live)


class Admission(msgspec.Struct, frozen=True, kw_only=True):
    """The request may spend: ``reserved_usd`` is held for it until billing settles it."""

    tenant: str
    request_id: str
    reserved_usd: Decimal
    remaining_usd: Decimal | None
    """What is left after this reservation; ``None`` when the tenant has no budget."""


class BudgetExceeded(msgspec.Struct, frozen=True, kw_only=True):
    """The typed rejection: the request would take the tenant past its budget; nothing was reserved."""

    tenant: str
    request_id: str
    estimate_usd: Decimal
    limit_usd: Decimal
    spent_usd: Decimal
    reserved_usd: Decimal
    period: Period
    api_key_id: str | None = None
    """Set when the refusing budget is an API key's rather than the tenant's."""
    code: ErrorCode = ErrorCode.BUDGET_EXCEEDED

    @property
    def message(self) -> str:
        left = self.limit_usd - self.spent_usd - self.reserved_usd
        whose = f"tenant {self.tenant!r}"
        if self.api_key_id is not None:
            whose = f"API key {self.api_key_id!r} of {whose}"
        return (
            f"budget of ${self.limit_usd} per {self.period} for {whose} cannot cover an estimated "
            f"${self.estimate_usd:.6f} (spent ${self.spent_usd:.6f}, reserved ${self.reserved_usd:.6f}, "
            f"left ${left:.6f})"
        )


def period_start_ms(period: Period, now_ms: int) -> int:
    """Start (UTC) of the ``period`` containing ``now_ms``."""
    if period == "total":
        return 0
    now = dt.datetime.fromtimestamp(now_ms / 1000, tz=dt.UTC)
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "month":
        start = start.replace(day=1)
    return calendar.timegm(start.timetuple()) * 1000
