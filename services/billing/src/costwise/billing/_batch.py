"""One pulled batch, without NATS or the database: the ledger lines its events become, the events refused,
and the budgets its lines settle."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

from costwise.contracts import ErrorCode
from costwise.messaging import Refusal

from ._ledger import Line
from ._pricing import Unbillable

__all__ = ["Owner", "priced", "settlements"]

log = logging.getLogger("costwise.billing")
Event = TypeVar("Event")
Owner = tuple[str, str | None]
"""Whose budget: (tenant, API key id); ``None`` is the tenant's own."""


def priced(events: Sequence[Event], to_lines: Callable[[Event], list[Line]]) -> tuple[list[Line], dict[int, Refusal]]:
    """The ledger lines of ``events``, and by index why each event that cannot be billed is refused."""
    lines: list[Line] = []
    refusals: dict[int, Refusal] = {}
    for i, event in enumerate(events):
        try:
            lines.extend(to_lines(event))
        except Unbillable as exc:
            refusals[i] = Refusal(exc.code, exc.reason)
        except Exception as exc:  # a bug must not turn one event into an endless redelivery loop
            log.exception("pricing failed on event %d of a batch", i)
            refusals[i] = Refusal(ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")
    return lines, refusals


def settlements(lines: Sequence[Line]) -> dict[Owner, list[str]]:
    """Every budget ``lines`` touch (the tenant's, and the key's for a keyed line: a key's budget is settled
    from its own lines), with the requests whose result is among them (their reservations close)."""
    finished: dict[Owner, list[str]] = {}
    for line in lines:
        for owner in {(line.tenant, None), (line.tenant, line.api_key_id)}:
            requests = finished.setdefault(owner, [])
            if line.kind == "result":
                requests.append(line.request_id)
    return finished
