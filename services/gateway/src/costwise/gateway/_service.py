"""What the gateway does, without HTTP: authenticate, admit, queue, wait, look up."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import KeyDeletedError, KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from costwise.catalog import Price
from costwise.client import Client, ResultWaiter, new_request_id
from costwise.contracts import ErrorCode, InferenceRequest, Result, decode, subjects
from costwise.contracts.messages import RequestId
from costwise.contracts.subjects import RESULTS
from costwise.telemetry import record_result

from ._mapping import result_error, to_completion, to_request
from .budget import BudgetHook, estimate_usd, rejection
from .errors import ApiError
from .keys import Caller, KeyStore
from .schema import AsyncCompletionRequest, ChatCompletion, ChatCompletionRequest, ErrorBody, RequestStatus
from .settings import GatewaySettings

__all__ = ["Accepted", "Gateway"]


class Accepted(msgspec.Struct, frozen=True, kw_only=True, tag="gateway_request.v1", tag_field="type"):
    """The gateway's note that it queued a request (so a poll can say "queued" rather than "unknown")."""

    created_ms: int


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
        accepted: KeyValue,
        budget: BudgetHook,
        price: Price,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.keys = keys
        self._client = client
        self._waiter = waiter
        self._js = js
        self._accepted = accepted
        self._budget = budget
        self._price = price
        self._clock = clock

    async def close(self) -> None:
        await self._waiter.stop()

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
        now = self._clock()
        request = to_request(body, caller=caller, request_id=request_id, now_ms=_ms(now), deadline_ms=_ms(now + wait_s))
        # Expected before it is queued (or looked up): the waiter then cannot miss the result, however soon it comes.
        async with self._waiter.expect(request.tenant, request.request_id) as arriving:
            done = await self._start(request, replayable=idempotency_key is not None) or await self._wait(
                request, arriving, wait_s
            )
        record_result(done, requested_model=body.model)
        return to_completion(done, requested_model=body.model)

    async def submit(self, caller: Caller, body: AsyncCompletionRequest, *, idempotency_key: str | None) -> str:
        """Queue ``body`` without waiting; its result is polled or delivered to ``callback_url``."""
        request_id = self._request_id(idempotency_key)
        request = to_request(
            body,
            caller=caller,
            request_id=request_id,
            now_ms=_ms(self._clock()),
            deadline_ms=None,
            callback_url=body.callback_url,
        )
        if await self._start(request, replayable=idempotency_key is not None) is None:
            await self._remember(request)
        return request_id

    async def status(self, tenant: str, request_id: str) -> RequestStatus:
        """A request's state; only ``tenant``'s own requests are visible (the lookup is by its subject)."""
        result = await self.result(tenant, request_id)
        if result is None:
            if not await self._was_accepted(tenant, request_id):
                raise ApiError(404, "request_not_found", f"no request {request_id!r}", param="request_id")
            return RequestStatus(id=request_id, status="queued")
        if result.status == "ok":
            return RequestStatus(id=request_id, status="completed", result=to_completion(result, requested_model=""))
        error = ErrorBody(**result_error(result).body()["error"])
        return RequestStatus(id=request_id, status="failed", error=error)

    async def result(self, tenant: str, request_id: str) -> Result | None:
        """The stored result of one request (results are kept in the RESULTS stream, one subject each)."""
        try:
            msg = await self._js.get_last_msg(RESULTS.name, subjects.results(tenant, request_id))
        except NotFoundError:
            return None
        return None if msg.data is None else decode(msg.data, Result)

    async def _start(self, request: InferenceRequest, *, replayable: bool) -> Result | None:
        """Queue ``request``, unless its id came from an Idempotency-Key and already has a result (returned):
        the queue's dedup window is minutes, results are kept for days."""
        done = await self.result(request.tenant, request.request_id) if replayable else None
        if done is None:
            await self._queue(request)
        return done

    async def _queue(self, request: InferenceRequest) -> None:
        admission = await self._budget.admit(request.tenant, estimate_usd(request, self._price))
        if not admission.allowed:
            raise rejection(admission)
        try:
            await self._client.publish(request)
        except ValueError as exc:  # the contract's checks, made by the client before publishing
            raise ApiError(400, str(ErrorCode.INVALID_REQUEST), str(exc)) from None

    async def _wait(self, request: InferenceRequest, arriving: asyncio.Future[Result], wait_s: float) -> Result:
        try:
            return await asyncio.wait_for(arriving, wait_s)
        except TimeoutError:
            await self._remember(request)  # so the caller can poll for the answer that is still coming
            raise ApiError(
                504,
                str(ErrorCode.DEADLINE_EXCEEDED),
                f"no result within {wait_s:.1f}s; poll GET /v1/requests/{request.request_id} for it",
                headers={"x-should-retry": "false"},
            ) from None

    async def _remember(self, request: InferenceRequest) -> None:
        note = Accepted(created_ms=request.created_ms)
        await self._accepted.put(f"{request.tenant}.{request.request_id}", msgspec.json.encode(note))

    async def _was_accepted(self, tenant: str, request_id: str) -> bool:
        try:
            await self._accepted.get(f"{tenant}.{request_id}")
        except (KeyNotFoundError, KeyDeletedError):
            return False
        return True

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


def _ms(seconds: float) -> int:
    return int(seconds * 1000)
