"""When to try a webhook again: exponential backoff with jitter, bounded by the retry window."""

from __future__ import annotations

from collections.abc import Callable

from .settings import WebhooksSettings

__all__ = ["next_delay"]


def next_delay(settings: WebhooksSettings, attempt: int, rng: Callable[[], float]) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based): initial·2^(n-1), capped, minus jitter.

    ``attempt`` is JetStream's delivery count, so the schedule survives restarts; jitter only shortens a
    delay, which keeps the last attempt inside the window.
    """
    nominal = min(settings.retry_initial_s * 2 ** min(attempt - 1, 62), settings.retry_max_s)
    return nominal * (1 - settings.retry_jitter * rng())
