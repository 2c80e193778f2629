"""One chat-completions call to an OpenAI-compatible API, with retries, typed in and out (the wire itself:
``costwise.openai_wire``). Given a :class:`Relay`, the call streams and its text reaches the client as it comes;
a stream that breaks is retried like a failed call, the retry's text joining the client's stream where it stopped
(``_relay``), or the call fails: a client never gets a cut answer as a finished one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import msgspec

from costwise.catalog import Provider
from costwise.contracts import ErrorCode, InferenceRequest
from costwise.openai_wire import (
    RETRYABLE_STATUS,
    ChatCompletion,
    ChatRequest,
    ErrorBody,
    StreamOptions,
    TooLarge,
    WireUsage,
    backoff_s,
    finish_reason,
    logprob_summary,
    read_limited,
)

from ._answer import Answer, Failure
from ._relay import Diverged, Relay
from ._streamed import Broken, read_answer

__all__ = ["Answer", "Failure", "call"]


class _Retry(Exception):
    """This try failed in a way the next one may not (overload, rate limit, a server restarting)."""


def _answer(data: bytes, provider: Provider) -> Answer:
    resp = msgspec.json.decode(data, type=ChatCompletion)
    if not resp.choices:
        raise msgspec.ValidationError("no choices")
    choice = resp.choices[0]
    return Answer(
        text=choice.message.content or "",
        finish_reason=finish_reason(choice.finish_reason),
        usage=(resp.usage or WireUsage()).usage(),
        logprobs=logprob_summary(choice.logprobs.values()) if choice.logprobs else None,
        model=resp.model or provider.model,
    )


def _body(provider: Provider, req: InferenceRequest, *, stream: bool) -> bytes:
    body = ChatRequest.of(provider.model, req.messages, req.sampling, logprobs=True)
    if stream:  # the usage chunk is what the provider bills: the completion's usage, as for an answer in one piece
        body = msgspec.structs.replace(body, stream=True, stream_options=StreamOptions(include_usage=True))
    return msgspec.json.encode(body)


async def _try(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    provider: Provider,
    req: InferenceRequest,
    max_bytes: int,
    relay: Relay | None,
) -> Answer | Failure:
    """One POST: an answer, a failure no retry can mend, or ``_Retry``/``Broken``/a transport error to try again."""
    async with client.stream("POST", url, content=body, headers=headers) as resp:
        try:
            if resp.status_code != 200:
                return _refused(resp.status_code, await read_limited(resp.aiter_bytes(), max_bytes))
            if relay is None:
                return _answer(await read_limited(resp.aiter_bytes(), max_bytes), provider)
            return await read_answer(resp.aiter_bytes(), relay, req, model=provider.model, max_bytes=max_bytes)
        except TooLarge:
            return Failure(ErrorCode.PROVIDER_ERROR, f"response larger than {max_bytes} bytes")
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return Failure(ErrorCode.PROVIDER_ERROR, f"unreadable response: {exc}")
        except Diverged as exc:  # no later try can un-send text: the router may fail over, the client's reader checks
            return Failure(ErrorCode.PROVIDER_ERROR, f"the stream broke and could not be continued: {exc}")


def _refused(status: int, data: bytes) -> Failure:
    why = f"HTTP {status}: {ErrorBody.text_of(data, 300)}"
    if status in RETRYABLE_STATUS:
        raise _Retry(why)
    return Failure(ErrorCode.PROVIDER_ERROR, why)


async def call(
    client: httpx.AsyncClient,
    provider: Provider,
    req: InferenceRequest,
    *,
    api_key: str | None,
    max_bytes: int,
    clock: Callable[[], float],
    relay: Relay | None = None,
) -> Answer | Failure:
    """POST ``/chat/completions``; retry timeouts, 429, 5xx and broken streams with jittered backoff while the
    deadline allows (``deadline_exceeded`` once it passed, ``provider_error`` when the tries ran out).

    Each try is bounded as a whole (``asyncio.timeout``), so a server that drips bytes cannot hold it forever.
    With ``relay`` the call streams (``stream_options.include_usage``) and every try's new text is relayed.
    """
    url = provider.base_url.rstrip("/") + "/chat/completions"
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    body = _body(provider, req, stream=relay is not None)
    last = "not tried"
    for attempt in range(provider.max_retries + 1):
        left = _left(req, clock)
        if left is not None and left <= 0:
            return Failure(ErrorCode.DEADLINE_EXCEEDED, f"deadline passed after {attempt} tries; last: {last}")
        timeout = provider.timeout_s if left is None else min(provider.timeout_s, left)
        try:
            async with asyncio.timeout(timeout):
                return await _try(
                    client, url, body, headers, provider=provider, req=req, max_bytes=max_bytes, relay=relay
                )
        except TimeoutError:
            last = f"no answer within {timeout:.1f}s"
        except httpx.TransportError as exc:  # refused, reset, or dropped mid-answer
            last = f"{type(exc).__name__}: {str(exc) or 'no detail'}"  # some of httpx's errors carry no message
        except (_Retry, Broken) as exc:
            last = str(exc)
        if attempt < provider.max_retries:
            pause, left = backoff_s(attempt), _left(req, clock)
            await asyncio.sleep(pause if left is None else min(pause, max(left, 0)))  # never wait past the deadline
    return Failure(ErrorCode.PROVIDER_ERROR, f"{provider.max_retries + 1} tries failed; last: {last}")


def _left(req: InferenceRequest, clock: Callable[[], float]) -> float | None:
    """Seconds until the request's deadline (``None``: it has none)."""
    return None if req.deadline_ms is None else req.deadline_ms / 1000 - clock()
