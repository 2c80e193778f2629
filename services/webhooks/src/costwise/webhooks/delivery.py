"""Delivering one outbox message: sign, check the URL, POST, then ack, retry later (nak) or give up."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import httpx
import msgspec
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from opentelemetry import context as otel_context
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Tracer

from costwise.contracts import DeadLetter, DecodeError, ErrorCode, Result, WebhookFailed, decode, subjects
from costwise.messaging import publish
from costwise.telemetry import extract

from .guard import CallbackRefused, Guard
from .retry import next_delay
from .sender import ResponseTooLarge, post
from .settings import WebhooksSettings
from .signing import Signer, webhook_id

__all__ = ["Attempt", "Delivery", "traced"]

log = logging.getLogger("costwise.webhooks")
SERVICE = "webhooks"


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
        clock: Callable[[], float],
        rng: Callable[[], float],
    ) -> None:
        self.settings, self.js, self.signer, self.guard, self.client = settings, js, signer, guard, client
        self.tracer, self.clock, self.rng = tracer, clock, rng

    async def decode(self, msg: Msg, subject_of: Callable[[Result], str]) -> Result | None:
        """The result ``msg`` carries, or None once it has been dead-lettered as malformed.

        A result must sit on its own tenant's subject: it is signed with, and sent to, the tenant it names.
        """
        try:
            result = decode(msg.data, Result)
        except DecodeError as exc:
            await self.malformed(msg, str(exc))
            return None
        if msg.subject != subject_of(result):
            await self.malformed(msg, f"a result of tenant {result.tenant!r} on subject {msg.subject}")
            return None
        return result

    async def handle(self, msg: Msg) -> None:
        result = await self.decode(msg, lambda r: subjects.webhooks(r.tenant))
        if result is None:
            return
        meta = msg.metadata
        deadline = meta.timestamp.timestamp() + self.settings.retry_window_s
        if meta.num_delivered > 1 and self.clock() > deadline:  # its handler died past the window: no loop
            await self.give_up(msg, result, ErrorCode.CALLBACK_FAILED, Attempt(error="retry window over"))
            return
        with traced(self.tracer, "webhooks deliver", msg.headers) as span:
            attempt = await self.attempt(result, msg.data)
            span.set_attributes(_attributes(result, attempt, meta.num_delivered))
        if attempt.delivered:
            await msg.ack()
        elif attempt.refused or attempt.status == 410:
            code = ErrorCode.CALLBACK_REFUSED if attempt.refused else ErrorCode.CALLBACK_GONE
            await self.give_up(msg, result, code, attempt)
        elif self.clock() + (delay := next_delay(self.settings, meta.num_delivered, self.rng)) > deadline:
            await self.give_up(msg, result, ErrorCode.CALLBACK_FAILED, attempt)
        else:
            log.info("webhook %s/%s: %s; retry in %.1f s", result.tenant, result.request_id, attempt.describe(), delay)
            await msg.nak(delay=delay)

    async def attempt(self, result: Result, body: bytes) -> Attempt:
        """One signed POST of ``body`` (the result as stored) to the result's callback URL."""
        msg_id = webhook_id(result.tenant, result.request_id)
        headers = self.signer.headers(result.tenant, msg_id, int(self.clock()), body)
        if headers is None:  # retried: the operator may add the secret within the window
            return Attempt(error=f"no webhook secret configured for tenant {result.tenant!r}")
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

    async def malformed(self, msg: Msg, why: str) -> None:
        """An undecodable message: dead letter (no tenant is known), then drop it from the queue."""
        letter = self._letter(msg, ErrorCode.MALFORMED_MESSAGE, f"not a result: {why}", tenant=None, request_id=None)
        await publish(self.js, subjects.dead_letters(SERVICE), letter, msg_id=_letter_id(msg))
        await msg.ack()

    async def give_up(
        self, msg: Msg, result: Result, code: ErrorCode, attempt: Attempt, *, attempts: int | None = None
    ) -> None:
        """Dead letter (the result, replayable) + ``webhook_failed`` event, then ack ``msg``."""
        # Not messaging.file_dead_letter: it would also publish an error *result* for the request, which
        # (after the results' dedup window) is a second result, with a callback: a webhook loop.
        tenant, request_id = result.tenant, result.request_id
        attempts = msg.metadata.num_delivered if attempts is None else attempts
        last = f"attempt {attempts}: " if attempts else ""
        reason = f"{_why(code, self.settings)}; {last}{attempt.describe()}"[:2000]
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
            ts_ms=int(self.clock() * 1000),
        )
        await publish(self.js, subjects.webhook_failed(tenant), event, msg_id=_letter_id(msg))
        await msg.ack()  # only now: a crash before this redelivers, and the dedup ids make the repeat harmless
        log.warning("webhook %s/%s given up: %s (%s)", tenant, request_id, code.value, reason)

    def _letter(
        self, msg: Msg, code: ErrorCode, reason: str, *, tenant: str | None, request_id: str | None
    ) -> DeadLetter:
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
            ts_ms=int(self.clock() * 1000),
        )


def _letter_id(msg: Msg) -> str:
    meta = msg.metadata
    return f"{SERVICE}-{meta.stream}-{meta.sequence.stream}"


def _why(code: ErrorCode, settings: WebhooksSettings) -> str:
    if code is ErrorCode.CALLBACK_GONE:
        return "the receiver answered 410 Gone"
    if code is ErrorCode.CALLBACK_REFUSED:
        return "callback URL refused"
    return f"no 2xx within the retry window ({settings.retry_window_s:g} s)"


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
def traced(tracer: Tracer | None, name: str, headers: Mapping[str, str] | None) -> Iterator[Span]:
    """Continue the message's trace: a consumer span when tracing, else just its context (so what we
    publish, and the webhook call, still carry the caller's ``traceparent``)."""
    parent = extract(headers)
    if tracer is not None:
        with tracer.start_as_current_span(name, context=parent, kind=SpanKind.CONSUMER) as span:
            yield span
        return
    token = otel_context.attach(parent)
    try:
        yield INVALID_SPAN
    finally:
        otel_context.detach(token)
