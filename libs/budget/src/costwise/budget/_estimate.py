"""A request's cost before it runs: what an admission reserves."""

from __future__ import annotations

from decimal import Decimal

from costwise.catalog import Price, estimate_usage
from costwise.contracts import InferenceRequest

__all__ = ["estimate_usd"]


def estimate_usd(price: Price, request: InferenceRequest) -> Decimal:
    """``request`` at ``price``, at its most (see :func:`costwise.catalog.estimate_usage`)."""
    return price.cost(estimate_usage(request))
