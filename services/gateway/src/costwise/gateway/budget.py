"""The budget hook: asked before a request is queued whether the tenant may spend on it.

``costwise.budget`` (billing) will provide the real implementation; until it is wired in, every request is
admitted. Anything with an ``admit`` coroutine of this shape can be passed to ``build(budget=...)``.
"""

from __future__ import annotations

from typing import Literal, Protocol

import msgspec

from costwise.catalog import Price, estimate_usage
from costwise.contracts import ErrorCode, InferenceRequest

from .errors import ApiError

__all__ = ["Admission", "AlwaysAllow", "BudgetHook", "estimate_usd", "rejection"]


class Admission(msgspec.Struct, frozen=True, kw_only=True):
    """A budget decision. ``reason`` says why a request was refused:

    ``budget_exceeded`` (→ HTTP 402: the budget is spent; retrying will not help) or
    ``rate_limited`` (→ HTTP 429: spending too fast; retry after ``retry_after_s``).
    """

    allowed: bool
    reason: Literal["budget_exceeded", "rate_limited"] | None = None
    message: str = ""
    retry_after_s: float | None = None


class BudgetHook(Protocol):
    async def admit(self, tenant: str, estimate_usd: float) -> Admission:
        """May ``tenant`` start a request that costs at most ``estimate_usd``?"""
        ...


class AlwaysAllow:
    """The default hook: no budgets enforced."""

    async def admit(self, tenant: str, estimate_usd: float) -> Admission:
        return Admission(allowed=True)


def estimate_usd(request: InferenceRequest, price: Price) -> float:
    """A worst-case cost at ``price`` (see :func:`costwise.catalog.estimate_usage`)."""
    return float(price.cost(estimate_usage(request)))


def rejection(admission: Admission) -> ApiError:
    """The HTTP error for a refused admission."""
    message = admission.message or "the tenant's budget does not allow this request"
    if admission.reason == "rate_limited":
        retry = {"retry-after": str(max(1, round(admission.retry_after_s or 1)))}
        return ApiError(429, str(ErrorCode.RATE_LIMITED), message, headers=retry)
    return ApiError(402, str(ErrorCode.BUDGET_EXCEEDED), message, headers={"x-should-retry": "false"})
