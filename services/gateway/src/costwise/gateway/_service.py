"""What the gateway does, without HTTP: authenticate, admit, queue, wait, look up."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator

import msgspec
from nats.js import JetStreamContext

from costwise.budget import BudgetExceeded, Budgets, estimate_usd
from costwise.callbacks import CallbackRefused, Guard, SecretStore
from costwise.catalog import Price
from costwise.client import Client, NotACacheHit, ResultWaiter, new_request_id
from costwise.contracts import Clock, ErrorCode, InferenceRequest, Result, now_ms
from costwise.contracts.messages import RequestId
from costwise.telemetry import record_result

from ._mapping import result_error, to_completion, to_request
from ._notes import Accepted, Notes
from ._streaming import Chunks, closing, events
from .errors import ApiError, budget_exceeded, request_not_found
from .keys import Caller, KeyStore
from .schema import (
    AsyncCompletionRequest,
    ChatCompletion,
    ChatCompletionRequest,
    ErrorBody,
    ModelList,
    RequestStatus,
    WrongHitReport,
)
from .settings import GatewaySettings

__all__ = ["Gateway"]


class Gateway:
    """The gateway's behaviour over one NATS connection; the HTTP layer (``_http``) only translates."""

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        client: Client,
        waiter: ResultWaiter,
        js: JetStreamContext,
        keys: KeyStore,
        notes: Notes,
        budgets: Budgets,
        price: Price,
        models: ModelList,
        guard: Guard,
        webhook_secrets: SecretStore,
        clock: Clock,
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.budgets = budgets
        self._client = client
        self._waiter = waiter
        self._js = js
        self._notes = notes
        self._price = price
        """The catalog's baseline: what a request is estimated at before the router picks its backend."""
        self.models = models
        """``GET /v1/models``: what ``model`` may name, from the catalog."""
        self._guard = guard
        self.webhook_secrets = webhook_secrets
        self._clock = clock

    async def authenticate(self, key: str | None) -> Caller:
        """Whose API key ``key`` is (sent as ``Authorization: Bearer <key>``); 401 otherwise."""
        caller = await self.keys.resolve(key) if key else None
        if caller is None:
            raise ApiError(401, "invalid_api_key", "missing or invalid API key (send Authorization: Bearer <key>)")
        return caller

    async def complete(
        self, caller: Caller, body: ChatCompletionRequest, *, idempotency_key: str | None, timeout_s: float | None
    ) -> ChatCompletion:
        """Queue ``body`` and wait for its result, up to the client's timeout (less a margin)."""
        request_id = self._request_id(idempotency_key)
        wait_s = self._wait_s(timeout_s)
        now = now_ms(self._clock)
        deadline = now + int(wait_s * 1000)
        request = to_request(body, caller=caller, request_id=request_id, now_ms=now, deadline_ms=deadline)
        # Expected before it is queued (or looked up): the waiter then cannot miss the result, however soon it comes.
        async with self._waiter.expect(request.tenant, request.request_id) as arriving:
            done = await self._start(request, keyed=idempotency_key is not None) or await self._wait(
                request, arriving, wait_s
            )
        record_result(done, requested_model=body.model)
        return to_completion(done, requested_model=body.model)

    async def stream(
        self, caller: Caller, body: ChatCompletionRequest, *, idempotency_key: str | None, timeout_s: float | None
    ) -> AsyncIterator[bytes]:
        """Queue ``body`` with ``stream=True`` and return its Server-Sent Events. What fails before it is queued
        (key reuse, budget, a bad request) raises :class:`ApiError` here, while an HTTP status can still say it."""
        request_id = self._request_id(idempotency_key)
        wait_s = self._wait_s(timeout_s)
        now = now_ms(self._clock)
        request = to_request(
            body, caller=caller, request_id=request_id, now_ms=now, deadline_ms=now + int(wait_s * 1000)
        )
        async with contextlib.AsyncExitStack() as stack:
            # Both before it is queued: a result or a delta however soon it comes is not missed.
            arriving = await stack.enter_async_context(self._waiter.expect(request.tenant, request.request_id))
            deltas = await self._client.open_deltas(request.tenant, request.request_id)
            stack.push_async_callback(deltas.close)
            done = await self._start(request, keyed=idempotency_key is not None)
            owned = stack.pop_all()  # from here the event stream owns them and closes them when it ends
        result = asyncio.sleep(0, done) if done is not None else self._wait(request, arriving, wait_s)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        chunks = Chunks(request_id, model=body.model, created=now // 1000, include_usage=include_usage)
        return closing(events(deltas.follow(result), chunks, requested_model=body.model), owned)

    async def submit(self, caller: Caller, body: AsyncCompletionRequest, *, idempotency_key: str | None) -> str:
        """Queue ``body`` without waiting; its result is polled, read as events (:meth:`follow`; with
        ``stream: true`` the workers publish its text as it is generated) or delivered to ``callback_url`` (checked
        first: a callback that could never be delivered is refused with 400 before anything is reserved or queued)."""
        if body.callback_url is not None:
            await self.check_callback(caller.tenant, body.callback_url)
        request_id = self._request_id(idempotency_key)
        request = to_request(
            body,
            caller=caller,
            request_id=request_id,
            now_ms=now_ms(self._clock),
            deadline_ms=None,
            callback_url=body.callback_url,
        )
        keyed = idempotency_key is not None
        if await self._start(request, keyed=keyed) is None and not keyed:  # a keyed one is noted already
            await self._notes.remember(request)
        return request_id

    async def follow(
        self, tenant: str, request_id: str, *, include_usage: bool, timeout_s: float | None
    ) -> AsyncIterator[bytes]:
        """One of ``tenant``'s requests as Server-Sent Events, like a streamed completion's: its text as it is
        generated (submitted with ``stream: true``, and followed before its first token: deltas are not kept, so
        a reader that joins later gets the text so far from the result), or once it is done, the stored result in
        pieces. 404 for a request the tenant never queued here."""
        async with contextlib.AsyncExitStack() as stack:
            # Both before looking for the result: one that lands meanwhile is not missed.
            arriving = await stack.enter_async_context(self._waiter.expect(tenant, request_id))
            deltas = await self._client.open_deltas(tenant, request_id)
            stack.push_async_callback(deltas.close)
            done = await self.result(tenant, request_id)
            known: Result | Accepted | None = done if done is not None else await self._notes.get(tenant, request_id)
            if known is None:
                raise request_not_found(request_id)
            owned = stack.pop_all()
        result = asyncio.sleep(0, done) if done is not None else _arrival(arriving, request_id, self._wait_s(timeout_s))
        chunks = Chunks(request_id, model="", created=known.created_ms // 1000, include_usage=include_usage)
        return closing(events(deltas.follow(result), chunks, requested_model=""), owned)

    async def check_callback(self, tenant: str, url: str) -> None:
        """400 unless ``tenant`` has a live webhook secret (in the ``WEBHOOK_SECRETS`` bucket) and ``url`` passes
        the webhooks service's SSRF policy now (the webhooks service checks both again at delivery)."""
        live = await self.webhook_secrets.live(tenant)
        if not live:
            raise ApiError(
                400,
                str(ErrorCode.INVALID_REQUEST),
                f"tenant {tenant!r} has no webhook signing secret, so a callback could not be signed: create one "
                f"(python -m costwise.webhooks secret create --tenant {tenant}) or leave out callback_url and poll",
                param="callback_url",
            )
        try:
            async with asyncio.timeout(self.settings.callback_resolve_timeout_s):
                await self._guard.target(url)
        except CallbackRefused as exc:
            raise ApiError(400, str(ErrorCode.CALLBACK_REFUSED), str(exc), param="callback_url") from None
        except TimeoutError:
            why = f"its host did not resolve within {self.settings.callback_resolve_timeout_s:g} s"
            raise ApiError(
                400, str(ErrorCode.CALLBACK_REFUSED), f"callback URL refused: {why}", param="callback_url"
            ) from None
        except OSError as exc:
            raise ApiError(
                400,
                str(ErrorCode.CALLBACK_REFUSED),
                f"callback URL refused: its host does not resolve ({exc})",
                param="callback_url",
            ) from None

    async def status(self, tenant: str, request_id: str) -> RequestStatus:
        """A request's state; only ``tenant``'s own requests are visible (the lookup is by its subject)."""
        result = await self.result(tenant, request_id)
        if result is None:
            if await self._notes.get(tenant, request_id) is None:
                raise request_not_found(request_id)
            return RequestStatus(id=request_id, status="queued")
        if result.status == "ok":
            return RequestStatus(id=request_id, status="completed", result=to_completion(result, requested_model=""))
        error = ErrorBody(**result_error(result).body()["error"])
        return RequestStatus(id=request_id, status="failed", error=error)

    async def result(self, tenant: str, request_id: str) -> Result | None:
        """The stored result of one request (results are kept in the RESULTS stream, one subject each)."""
        return await self._client.stored_result(tenant, request_id)

    async def report_wrong_hit(self, tenant: str, request_id: str, reason: str) -> WrongHitReport:
        """``costwise cache wrong`` over HTTP: only ``tenant``'s own requests; 404 unless the cache answered it."""
        try:
            await self._client.report_wrong_hit(tenant, request_id, reason=reason)
        except NotACacheHit as exc:
            raise ApiError(404, "not_a_cache_hit", str(exc), param="request_id") from None
        return WrongHitReport(id=request_id)

    async def _start(self, request: InferenceRequest, *, keyed: bool) -> Result | None:
        """Queue ``request``; unless its id came from an Idempotency-Key and already has a result (returned):
        the queue's dedup window is minutes, results are kept for days. A key used before with another body is
        refused (422) before anything is reserved or queued."""
        if not keyed:
            await self._queue(request)
            return None
        first = await self._notes.claim(request)
        done = await self.result(request.tenant, request.request_id)
        if done is None:
            await self._queue(request, claimed=first)
        return done

    async def _queue(self, request: InferenceRequest, *, claimed: bool = False) -> None:
        """Admit and publish ``request``; if that fails and this call ``claimed`` its Idempotency-Key, the key
        is free again (for any body), since nothing was queued under it."""
        try:
            await self._admit_and_publish(request)
        except Exception:
            if claimed:
                await self._notes.release(request)
            raise

    async def _admit_and_publish(self, request: InferenceRequest) -> None:
        await self._admit(request)
        try:
            await self._client.publish(request)
        except Exception as exc:
            # Not queued (as far as we know): no router would replace this reservation, no result let billing
            # settle it. Had a timed-out publish landed after all, the router admits it afresh anyway.
            await self.budgets.release(request.tenant, request.request_id, api_key_id=request.api_key_id)
            if isinstance(exc, ValueError):  # the contract's checks, made by the client before publishing
                raise ApiError(400, str(ErrorCode.INVALID_REQUEST), str(exc)) from None
            raise

    async def _admit(self, request: InferenceRequest) -> None:
        """Reserve the request's worst case (at the baseline price) under its own id, or refuse it with 402 now,
        without a trip through the queue. The router admits each attempt again under the same id, which
        replaces this reservation; billing settles it when the result is in the ledger."""
        verdict = await self.budgets.admit(
            request.tenant, request.request_id, estimate_usd(self._price, request), api_key_id=request.api_key_id
        )
        if isinstance(verdict, BudgetExceeded):
            raise budget_exceeded(verdict)

    async def _wait(self, request: InferenceRequest, arriving: asyncio.Future[Result], wait_s: float) -> Result:
        try:
            return await _arrival(arriving, request.request_id, wait_s)
        except ApiError:
            await self._notes.remember(request)  # so the caller can poll for the answer that is still coming
            raise

    def _request_id(self, idempotency_key: str | None) -> str:
        if idempotency_key is None:
            return new_request_id()
        with contextlib.suppress(msgspec.ValidationError):
            return msgspec.convert(idempotency_key, RequestId)
        # Any other key still maps to one stable, subject-safe id.
        return "idem-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:40]

    def _wait_s(self, timeout_s: float | None) -> float:
        timeout = min(timeout_s or self.settings.default_timeout_s, self.settings.max_timeout_s)
        return max(timeout - self.settings.timeout_margin_s, 0.1)


async def _arrival(arriving: asyncio.Future[Result], request_id: str, wait_s: float) -> Result:
    try:
        return await asyncio.wait_for(arriving, wait_s)
    except TimeoutError:
        raise ApiError(
            504,
            str(ErrorCode.DEADLINE_EXCEEDED),
            f"no result within {wait_s:.1f}s; poll GET /v1/requests/{request_id} for it",
            headers={"x-should-retry": "false"},
        ) from None
