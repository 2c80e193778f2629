"""The delivery rules, without NATS or HTTP: what an attempt's outcome means, and when a result is too old.

Pure functions of the outcome, the time and the settings, so every rule is unit-testable with numbers.
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec

from costwise.contracts import ErrorCode, Result

from .settings import WebhooksSettings

__all__ = ["Attempt", "GiveUp", "Retry", "describe_failure", "stale_for", "verdict"]


class Attempt(msgspec.Struct, frozen=True):
    """How one POST went: a status when the receiver answered, else why not."""

    status: int | None = None
    error: str | None = None
    refused: bool = False

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def describe(self) -> str:
        return f"HTTP {self.status}" if self.status is not None else str(self.error)


class Retry(NamedTuple):
    """Try again after ``delay_s`` (JetStream redelivers: the schedule survives restarts)."""

    delay_s: float


class GiveUp(NamedTuple):
    """Stop trying: dead letter (replayable) and a ``webhook_failed`` event with ``code``."""

    code: ErrorCode


def verdict(attempt: Attempt, *, now_s: float, deadline_s: float, delay_s: float) -> Retry | GiveUp | None:
    """What follows ``attempt``: ``None`` once delivered; give up on a refused URL or a 410 at once, and on
    any other failure when the next try (``delay_s`` from ``now_s``) would fall after ``deadline_s``."""
    if attempt.delivered:
        return None
    if attempt.refused:
        return GiveUp(ErrorCode.CALLBACK_REFUSED)
    if attempt.status == 410:
        return GiveUp(ErrorCode.CALLBACK_GONE)
    if now_s + delay_s > deadline_s:
        return GiveUp(ErrorCode.CALLBACK_FAILED)
    return Retry(delay_s)


def stale_for(result: Result, now_s: float, settings: WebhooksSettings) -> float | None:
    """How long ago ``result`` completed, if that is past the retry window (its webhook is then not sent:
    e.g. the backlog a first deployment finds, or an outage longer than the window; it stays replayable)."""
    if result.callback_url is None or not result.completed_ms:
        return None
    age_s = now_s - result.completed_ms / 1000
    return age_s if age_s > settings.retry_window_s else None


def describe_failure(code: ErrorCode, settings: WebhooksSettings) -> str:
    if code is ErrorCode.CALLBACK_GONE:
        return "the receiver answered 410 Gone"
    if code is ErrorCode.CALLBACK_REFUSED:
        return "callback URL refused"
    return f"no 2xx within the retry window ({settings.retry_window_s:g} s)"
