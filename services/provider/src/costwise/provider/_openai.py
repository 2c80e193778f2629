"""One chat-completions call to an OpenAI-compatible API, with retries, typed in and out."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import msgspec

from costwise.catalog import Provider
from costwise.contracts import ErrorCode, InferenceRequest, LogprobSummary, Usage

__all__ = ["Answer", "Failure", "call"]

_RETRYABLE = {408, 409, 425, 429, 500, 502, 503, 504}


class _TokenLogprob(msgspec.Struct):
    logprob: float


class _Logprobs(msgspec.Struct):
    content: list[_TokenLogprob] | None = None


class _Message(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    message: _Message
    finish_reason: str | None = None
    logprobs: _Logprobs | None = None


class _PromptDetails(msgspec.Struct):
    cached_tokens: int = 0


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_details: _PromptDetails | None = None


class _Response(msgspec.Struct):
    """The part of an OpenAI ``chat.completion`` response costwise reads; the rest is ignored."""

    choices: list[_Choice]
    model: str = ""
    usage: _Usage | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    finish_reason: str
    usage: Usage
    logprobs: LogprobSummary | None
    model: str


@dataclass(frozen=True, slots=True)
class Failure:
    code: ErrorCode
    message: str


def _body(provider: Provider, req: InferenceRequest) -> dict[str, object]:
    sampling = req.sampling
    body: dict[str, object] = {
        "model": provider.model,
        "messages": [{"role": m.role, "content": m.content} for m in req.messages],
        "max_tokens": sampling.max_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "logprobs": True,  # the cascade's quality check reads them
    }
    if sampling.stop:
        body["stop"] = sampling.stop
    if sampling.seed is not None:
        body["seed"] = sampling.seed
    return body


def _answer(data: bytes, provider: Provider) -> Answer:
    resp = msgspec.json.decode(data, type=_Response)
    if not resp.choices:
        raise msgspec.ValidationError("no choices")
    choice, usage = resp.choices[0], resp.usage or _Usage()
    tokens = [t.logprob for t in (choice.logprobs.content or [])] if choice.logprobs else []
    summary = LogprobSummary(mean=sum(tokens) / len(tokens), min=min(tokens), count=len(tokens)) if tokens else None
    finish = choice.finish_reason if choice.finish_reason in ("stop", "length") else "abort"
    cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0
    return Answer(
        text=choice.message.content or "",
        finish_reason=finish,
        usage=Usage(
            prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens, cached_prompt_tokens=cached
        ),
        logprobs=summary,
        model=resp.model or provider.model,
    )


class _TooLarge(Exception):
    pass


async def _post(
    client: httpx.AsyncClient, url: str, body: dict[str, object], headers: dict[str, str], max_bytes: int
) -> tuple[int, bytes]:
    async with client.stream("POST", url, json=body, headers=headers) as resp:
        chunks, size = [], 0
        async for chunk in resp.aiter_bytes():
            size += len(chunk)
            if size > max_bytes:
                raise _TooLarge
            chunks.append(chunk)
        return resp.status_code, b"".join(chunks)


async def call(
    client: httpx.AsyncClient,
    provider: Provider,
    req: InferenceRequest,
    *,
    api_key: str | None,
    max_bytes: int,
    clock: Callable[[], float],
) -> Answer | Failure:
    """POST ``/chat/completions``; retry timeouts, 429 and 5xx with jittered backoff while the deadline allows.

    Each try is bounded as a whole (``asyncio.timeout``), so a server that drips bytes cannot hold it forever.
    """
    url = provider.base_url.rstrip("/") + "/chat/completions"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    body, last = _body(provider, req), "not tried"
    for attempt in range(provider.max_retries + 1):
        left = None if req.deadline_ms is None else req.deadline_ms / 1000 - clock()
        if left is not None and left <= 0:
            return Failure(ErrorCode.DEADLINE_EXCEEDED, f"deadline passed after {attempt} tries; last: {last}")
        timeout = provider.timeout_s if left is None else min(provider.timeout_s, left)
        try:
            async with asyncio.timeout(timeout):
                status, data = await _post(client, url, body, headers, max_bytes)
        except TimeoutError:
            last = f"no answer within {timeout:.1f}s"
        except httpx.TransportError as exc:
            last = f"{type(exc).__name__}: {exc}"
        except _TooLarge:
            return Failure(ErrorCode.PROVIDER_ERROR, f"response larger than {max_bytes} bytes")
        else:
            if status == 200:
                try:
                    return _answer(data, provider)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    return Failure(ErrorCode.PROVIDER_ERROR, f"unreadable response: {exc}")
            last = f"HTTP {status}: {data[:300].decode('utf-8', 'replace')}"
            if status not in _RETRYABLE:
                return Failure(ErrorCode.PROVIDER_ERROR, last)
        if attempt < provider.max_retries:
            await asyncio.sleep(min(0.25 * 2**attempt, 8.0) * random.uniform(0.5, 1.5))
    return Failure(ErrorCode.PROVIDER_ERROR, f"{provider.max_retries + 1} tries failed; last: {last}")
