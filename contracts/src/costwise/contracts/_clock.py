"""Time as the contracts carry it: every ``*_ms`` field is milliseconds since the epoch."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Clock", "now_ms"]

Clock = Callable[[], float]
"""Seconds since the epoch (``time.time``); services take one so tests can inject time."""


def now_ms(clock: Clock = time.time) -> int:
    """``clock``'s now in the unit of the contracts' ``*_ms`` fields."""
    return int(clock() * 1000)
