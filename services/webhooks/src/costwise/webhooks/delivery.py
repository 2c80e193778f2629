"""Delivering one outbox message: sign, check the URL, POST, then ack, retry later (nak) or give up.

The outbox consumer decodes the message and checks its tenant; this handler still reads the message itself
(``current_message``): its delivery count and first-stored time drive the retry schedule, and the body is
POSTed and signed exactly as stored."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from opentelemetry import context as otel_context
from opentelemetry.trace import INVALID_SPAN, Span, Tracer

from costwise.contracts import Clock, DeadLetter, ErrorCode, Result, WebhookFailed, now_ms, subjects
from costwise.messaging import ack_current, current_message, publish
from costwise.telemetry import extract

from ._policy import Attempt, GiveUp, Retry, describe_failure, verdict
from .guard import CallbackRefused, Guard
from .retry import next_delay
from .sender import ResponseTooLarge, post
from .settings import WebhooksSettings
from .signing import Signer, webhook_id

__all__ = ["Attempt", "Delivery", "traced"]

log = logging.getLogger("costwise.webhooks")
SERVICE = "webhooks"
_REMEMBERED = 10_000


class Delivery:
    """The per-message policy: 2xx → ack; 410 or a refused URL → give up now; else retry until the window ends."""

    def __init__(
        self,
        settings: WebhooksSettings,
        js: JetStreamContext,
        *,
        signer: Signer,
        guard: Guard,
        client: httpx.AsyncClient,
        tracer: Tracer | None,
        clock: Clock,
        rng: Callable[[], float],
    ) -> None:
        self.settings, self.js, self.signer, self.guard, self.client = settings, js, signer, guard, client
        self.tracer, self.clock, self.rng = tracer, clock, rng
        self._failed: dict[int, Attempt] = {}
        """The last failed attempt of each message waiting for its retry, by stream sequence: a retry that
        arrives after the window closed gives up with that attempt's reason (in memory only: after a restart the
        reason is just "retry window over"). About one entry per outbox (max_ack_pending=1); capped, because a retry
        another replica takes never comes back here."""

    async def handle(self, result: Result) -> None:
        """Deliver the outbox's head (the consumer decoded it and checked its tenant against the subject)."""
        msg = current_message()
        meta = msg.metadata
        deadline = meta.timestamp.timestamp() + self.settings.retry_window_s
        last = self._failed.pop(meta.sequence.stream, None)
        if meta.num_delivered > 1 and self.clock() > deadline:  # its handler died past the window: no loop
            over = f"retry window over; before it, {last.describe()}" if last else "retry window over"
            await self.give_up(result, ErrorCode.CALLBACK_FAILED, Attempt(error=over))
            return
        with traced(self.tracer, "webhooks deliver") as span:
            attempt = await self.attempt(result, msg.data)
            span.set_attributes(_attributes(result, attempt, meta.num_delivered))
        await self._follow_up(result, attempt, meta.num_delivered, deadline)

    async def _follow_up(self, result: Result, attempt: Attempt, delivered: int, deadline: float) -> None:
        delay = next_delay(self.settings, delivered, self.rng)
        match verdict(attempt, now_s=self.clock(), deadline_s=deadline, delay_s=delay):
            case None:
                await ack_current()
            case GiveUp(code):
                await self.give_up(result, code, attempt)
            case Retry(delay_s):
                log.info(
                    "webhook %s/%s: %s; retry in %.1f s", result.tenant, result.request_id, attempt.describe(), delay_s
                )
                self._remember(attempt)
                await current_message().nak(delay=delay_s)  # the outbox waits for it (max_ack_pending=1)

    def _remember(self, failed: Attempt) -> None:
        self._failed[current_message().metadata.sequence.stream] = failed
        if len(self._failed) > _REMEMBERED:
            del self._failed[next(iter(self._failed))]  # the oldest

    async def attempt(self, result: Result, body: bytes) -> Attempt:
        """One signed POST of ``body`` (the result as stored) to the result's callback URL."""
        msg_id = webhook_id(result.tenant, result.request_id)
        headers = await self.signer.headers(result.tenant, msg_id, int(self.clock()), body)
        if headers is None:  # retried: the operator may add the secret within the window
            return Attempt(
                error=f"no webhook secret configured for tenant {result.tenant!r} "
                f"(python -m costwise.webhooks secret create --tenant {result.tenant})"
            )
        try:
            async with asyncio.timeout(self.settings.attempt_timeout_s):
                target = await self.guard.target(result.callback_url or "")
                status = await post(self.client, target, body, headers, self.settings.max_response_bytes)
        except CallbackRefused as exc:
            return Attempt(error=str(exc), refused=True)
        except TimeoutError:
            return Attempt(error=f"no complete response within {self.settings.attempt_timeout_s} s")
        except (httpx.HTTPError, OSError, ResponseTooLarge) as exc:
            return Attempt(error=f"{type(exc).__name__}: {exc}")
        return Attempt(status=status)

    async def give_up(self, result: Result, code: ErrorCode, attempt: Attempt, *, attempts: int | None = None) -> None:
        """Dead letter (the result, replayable) + ``webhook_failed`` event, then ack the message being handled."""
        # Not messaging.file_dead_letter: it would also publish an error *result* for the request, which
        # (after the results' dedup window) is a second result, with a callback: a webhook loop.
        msg, tenant, request_id = current_message(), result.tenant, result.request_id
        attempts = msg.metadata.num_delivered if attempts is None else attempts
        last = f"attempt {attempts}: " if attempts else ""
        reason = f"{describe_failure(code, self.settings)}; {last}{attempt.describe()}"[:2000]
        letter = self._letter(msg, code, reason, tenant=tenant, request_id=request_id)
        await publish(self.js, subjects.webhook_dead_letters(tenant), letter, msg_id=_letter_id(msg))
        event = WebhookFailed(
            tenant=tenant,
            request_id=request_id,
            webhook_id=webhook_id(tenant, request_id),
            callback_url=result.callback_url or "",
            code=code,
            reason=reason,
            attempts=attempts,
            last_status=attempt.status,
            ts_ms=now_ms(self.clock),
        )
        await publish(self.js, subjects.webhook_failed(tenant), event, msg_id=_letter_id(msg))
        await ack_current()  # only now: a crash before this redelivers, and the dedup ids make the repeat harmless
        log.warning("webhook %s/%s given up: %s (%s)", tenant, request_id, code.value, reason)

    def _letter(self, msg: Msg, code: ErrorCode, reason: str, *, tenant: str, request_id: str) -> DeadLetter:
        meta = msg.metadata
        return DeadLetter(
            service=SERVICE,
            subject=msg.subject,
            code=code,
            reason=reason,
            payload=msg.data,
            num_delivered=meta.num_delivered,
            stream_seq=meta.sequence.stream,
            request_id=request_id,
            tenant=tenant,
            ts_ms=now_ms(self.clock),
        )


def _letter_id(msg: Msg) -> str:
    meta = msg.metadata
    return f"{SERVICE}-{meta.stream}-{meta.sequence.stream}"


def _attributes(result: Result, attempt: Attempt, delivery: int) -> dict[str, str | int | bool]:
    attrs: dict[str, str | int | bool] = {
        "costwise.tenant": result.tenant,
        "costwise.request_id": result.request_id,
        "costwise.webhook.attempt": delivery,
        "costwise.webhook.delivered": attempt.delivered,
    }
    if attempt.status is not None:
        attrs["http.response.status_code"] = attempt.status
    return attrs


@contextmanager
def traced(tracer: Tracer | None, name: str) -> Iterator[Span]:
    """A span of its own inside the consumer's when tracing; without a tracer, at least the message's trace
    context, so what we publish and the webhook call still carry the caller's ``traceparent``."""
    if tracer is not None:
        with tracer.start_as_current_span(name) as span:
            yield span
        return
    token = otel_context.attach(extract(current_message().headers))
    try:
        yield INVALID_SPAN
    finally:
        otel_context.detach(token)
