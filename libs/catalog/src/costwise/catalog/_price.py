"""Prices in exact decimal dollars: a ledger's parts must add up to the cent, and beyond."""

from __future__ import annotations

from decimal import Decimal

import msgspec

from costwise.contracts import Usage

__all__ = ["MILLION", "Price", "usd"]

MILLION = Decimal(1_000_000)


def usd(value: float | int | str | Decimal) -> Decimal:
    """A config number as an exact decimal (``0.1`` stays 0.1, not 0.1000000000000000055…)."""
    return value if isinstance(value, Decimal) else Decimal(str(value))


class Price(msgspec.Struct, frozen=True, kw_only=True):
    """Dollars per million tokens, prompt and completion priced apart (as every provider does)."""

    usd_per_m_input: Decimal
    usd_per_m_output: Decimal

    def cost(self, usage: Usage) -> Decimal:
        """What ``usage`` costs at this price, exactly."""
        tokens_in = Decimal(usage.prompt_tokens) * self.usd_per_m_input
        tokens_out = Decimal(usage.completion_tokens) * self.usd_per_m_output
        return (tokens_in + tokens_out) / MILLION

    def scaled(self, factor: Decimal) -> Price:
        return Price(usd_per_m_input=self.usd_per_m_input * factor, usd_per_m_output=self.usd_per_m_output * factor)
