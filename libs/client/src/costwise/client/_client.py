from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from types import TracebackType

import msgspec
from nats.aio.client import Client as Nats
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

from costwise.contracts import (
    CacheInvalidation,
    CacheWrongHit,
    ChatMessage,
    DecodeError,
    InferenceRequest,
    Result,
    SamplingParams,
    decode,
    encode,
    now_ms,
    subjects,
)
from costwise.messaging import connect, publish

from ._reader import ResultReader
from ._stream import Delta, DeltaStream

__all__ = ["Client", "NotACacheHit", "new_request_id"]


class NotACacheHit(LookupError):
    """A wrong-hit report named a request with no result, or one the cache did not answer: nothing to report."""


def new_request_id() -> str:
    """A random request id (a UUID4 in hex: subject-safe and unguessable)."""
    return uuid.uuid4().hex


class Client:
    """A thin client over one NATS connection (which it closes only if it opened it)."""

    def __init__(self, nc: Nats, *, owns_connection: bool = False) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._owns = owns_connection

    @classmethod
    async def connect(cls, url: str, *, patient: bool = True) -> Client:
        """A client on its own connection; ``patient=False`` (a one-shot command) gives up after ~2 s with
        ``costwise.messaging.NatsUnreachable`` instead of waiting for a server forever."""
        return cls(await connect(url, name="costwise-client", patient=patient), owns_connection=True)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns:
            await self._nc.drain()

    async def publish(
        self,
        request: InferenceRequest | None = None,
        *,
        tenant: str | None = None,
        prompt: str | None = None,
        model: str = "auto",
        max_tokens: int = 256,
        request_id: str | None = None,
        callback_url: str | None = None,
    ) -> str:
        """Publish ``request`` (or one built from ``tenant`` + ``prompt``); returns its request id.

        Publishing the same request id twice is safe: the stream keeps one copy (idempotency key). A request
        whose cache mode is ``bypass`` goes straight to the router (``subjects.entry``).
        """
        if request is None:
            request = _request(tenant, prompt, model, max_tokens, request_id, callback_url)
        data = _checked(request, "request")
        subject = subjects.entry(request.tenant, bypass_cache=request.cache.mode == "bypass")
        await publish(self._js, subject, data, msg_id=subjects.dedup_id(request.tenant, request.request_id))
        return request.request_id

    async def stream(
        self,
        request: InferenceRequest | None = None,
        *,
        tenant: str | None = None,
        prompt: str | None = None,
        model: str = "auto",
        max_tokens: int = 256,
        request_id: str | None = None,
        timeout: float = 60.0,
    ) -> AsyncIterator[Delta]:
        """Publish a request with ``stream=True`` and yield its answer's pieces as they are generated; the last
        :class:`Delta` carries the :class:`Result` (and ``error`` when it failed).

        >>> async for delta in client.stream(tenant="acme", prompt="Tell me a story"):
        ...     print(delta.text, end="", flush=True)
        """
        if request is None:
            request = _request(tenant, prompt, model, max_tokens, request_id, None)
        request = msgspec.structs.replace(request, stream=True)
        deltas = await self.open_deltas(request.tenant, request.request_id)  # before publishing: core NATS
        try:
            await self.publish(request)
            async for delta in deltas.follow(self.result(request.tenant, request.request_id, timeout=timeout)):
                yield delta
        finally:
            await deltas.close()

    async def open_deltas(self, tenant: str, request_id: str) -> DeltaStream:
        """Subscribe to one request's deltas; do it before publishing the request (close it when done)."""
        return await DeltaStream.open(self._nc, tenant, request_id)

    async def invalidate(self, tenant: str, cached_request_id: str | None = None, *, reason: str = "") -> None:
        """Make the cache forget the answer ``cached_request_id`` produced, or every answer of ``tenant``.

        Returns once the command is stored; the cache applies it moments later.
        """
        command = CacheInvalidation(tenant=tenant, cached_request_id=cached_request_id, reason=reason)
        data = _checked(command, "invalidation")
        await publish(self._js, subjects.cache_control(tenant), data, msg_id=new_request_id())

    async def report_wrong_hit(self, tenant: str, request_id: str, *, reason: str = "") -> None:
        """Tell the cache the answer it served ``request_id`` was wrong: it forgets that entry, records the pair and
        tightens ``tenant``'s semantic threshold. Raises :class:`NotACacheHit` unless the request's stored result
        came from the cache (the cache checks again when it applies the report). Reporting twice is one report."""
        data = _checked(CacheWrongHit(tenant=tenant, request_id=request_id, reason=reason), "report")
        stored = await self.stored_result(tenant, request_id)
        if stored is None:
            raise NotACacheHit(f"request {request_id} of {tenant} has no result: nothing to report")
        if stored.cache is None:
            raise NotACacheHit(f"request {request_id} of {tenant} was answered by {stored.source}, not the cache")
        msg_id = subjects.dedup_id(tenant, request_id, "cache_wrong")
        await publish(self._js, subjects.cache_control(tenant), data, msg_id=msg_id)

    async def stored_result(self, tenant: str, request_id: str) -> Result | None:
        """The result ``request_id`` got, if it has one yet (no waiting; see :meth:`result`)."""
        try:
            msg = await self._js.get_last_msg(subjects.RESULTS.name, subjects.results(tenant, request_id))
        except NotFoundError:
            return None
        return None if msg.data is None else decode(msg.data, Result)

    async def result(self, tenant: str, request_id: str, *, timeout: float = 60.0) -> Result:
        """Wait for the result of one request (also returns one that arrived before the call).

        Works on a tenant's own NATS user too (see :func:`connect_tenant`): the wait is a consumer filtered on
        this one result, pushed to this connection's inbox. ``timeout`` covers creating it as well.
        """
        reader = ResultReader(self._nc, subjects.results(tenant, request_id), DeliverPolicy.ALL)
        try:
            async with asyncio.timeout(timeout):
                await reader.open(timeout=timeout)
                msg = await reader.next()
        except TimeoutError:  # also a consumer the server never made (a tenant asking for another's result)
            raise TimeoutError(f"no result for {request_id} within {timeout}s") from None
        finally:
            await reader.close()
        return decode(msg.data, Result)

    async def results(self, tenant: str, *, since_start: bool = False) -> AsyncIterator[Result]:
        """Iterate over ``tenant``'s results as they arrive (all stored ones first with ``since_start``)."""
        policy = DeliverPolicy.ALL if since_start else DeliverPolicy.NEW
        reader = await ResultReader(self._nc, subjects.tenant_results(tenant), policy).open()
        try:
            while True:
                yield decode((await reader.next()).data, Result)
        finally:
            await reader.close()

    async def wait_all(self, tenant: str, request_ids: set[str], *, timeout: float) -> dict[str, Result]:
        """Collect the results of many requests of one tenant (one subscription, not one per request)."""
        found: dict[str, Result] = {}

        async def collect() -> None:
            async for result in self.results(tenant, since_start=True):
                if result.request_id in request_ids:
                    found.setdefault(result.request_id, result)
                    if len(found) == len(request_ids):
                        return

        try:
            await asyncio.wait_for(collect(), timeout)
        except TimeoutError:
            missing = len(request_ids) - len(found)
            raise TimeoutError(f"{missing} of {len(request_ids)} results missing after {timeout}s") from None
        return found


def _checked(message: msgspec.Struct, what: str) -> bytes:
    """``message`` encoded, once it decodes again under its own constraints (Struct constructors do not check
    them, and a bad tenant or id would even change the subject it is published on); ValueError if not."""
    data = encode(message)
    try:
        decode(data, type(message))
    except DecodeError as exc:
        raise ValueError(f"invalid {what}: {exc}") from None
    return data


def _request(
    tenant: str | None,
    prompt: str | None,
    model: str,
    max_tokens: int,
    request_id: str | None,
    callback_url: str | None,
) -> InferenceRequest:
    if tenant is None or prompt is None:
        raise ValueError("give a request, or a tenant and a prompt")
    return InferenceRequest(
        request_id=request_id or new_request_id(),
        tenant=tenant,
        model=model,
        messages=[ChatMessage(role="user", content=prompt)],
        sampling=SamplingParams(max_tokens=max_tokens),
        callback_url=callback_url,
        created_ms=now_ms(),
    )
