"""The delivery rules as numbers (no network): what follows an attempt, and when a result is too old."""

from __future__ import annotations

import pytest

from costwise.contracts import ErrorCode, Result
from costwise.webhooks import WebhooksSettings
from costwise.webhooks._policy import Attempt, GiveUp, Retry, stale_for, verdict


@pytest.mark.parametrize(
    ("attempt", "now_s", "expected"),
    [
        (Attempt(status=204), 99.0, None),  # delivered: even at the window's edge
        (Attempt(error="10.0.0.1 is private", refused=True), 0.0, GiveUp(ErrorCode.CALLBACK_REFUSED)),
        (Attempt(status=410), 0.0, GiveUp(ErrorCode.CALLBACK_GONE)),
        (Attempt(status=503), 0.0, Retry(5.0)),
        (Attempt(error="ConnectError"), 94.0, Retry(5.0)),  # the next try lands exactly at the deadline
        (Attempt(status=503), 95.5, GiveUp(ErrorCode.CALLBACK_FAILED)),  # it would land after it
    ],
)
def test_an_attempt_is_acked_retried_or_given_up(attempt: Attempt, now_s: float, expected: object) -> None:
    assert verdict(attempt, now_s=now_s, deadline_s=99.0, delay_s=5.0) == expected


def test_only_a_result_with_a_callback_older_than_the_window_is_stale() -> None:
    settings = WebhooksSettings(retry_window_s=60.0)
    old = Result(request_id="r", tenant="t", status="ok", callback_url="https://x.test/h", completed_ms=1_000_000)
    assert stale_for(old, 1_000 + 61, settings) == pytest.approx(61)
    assert stale_for(old, 1_000 + 59, settings) is None
    assert stale_for(Result(request_id="r", tenant="t", status="ok", completed_ms=1), 10**9, settings) is None
    no_time = Result(request_id="r", tenant="t", status="ok", callback_url="https://x.test/h")
    assert stale_for(no_time, 10**9, settings) is None  # no completion time: nothing to measure against
