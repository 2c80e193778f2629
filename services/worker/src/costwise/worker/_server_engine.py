"""An OpenAI-compatible engine server as the worker's engine (``vllm serve``, SGLang, TGI, llama.cpp, or the bench's
recording server): each job is one streamed ``POST {engine_url}/chat/completions``.

The server batches; the worker keeps its queue semantics (ack/nak, heartbeats, hand-back on a spot notice). A
server streams text, not token ids: a handed-back job's checkpoint carries the text, and the next worker asks the
server to continue it (``continue_final_message``), or starts over where the server cannot.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass

import httpx
import msgspec

from costwise.contracts import ChatMessage, Checkpoint, ErrorCode, SamplingParams
from costwise.openai_wire import (
    RETRYABLE_STATUS,
    ChatRequest,
    ErrorBody,
    Message,
    StreamOptions,
    TooLarge,
    WireUsage,
    backoff_s,
    finish_reason,
    read_limited,
)

from ._progress import Generation, Progress
from ._protocol import EngineRefused, EngineUnavailable, OnStep
from ._server_stream import Reply, read_stream
from .settings import WorkerSettings

__all__ = ["ServerEngine"]

# How servers word "prompt + max_tokens do not fit": vLLM ("maximum context length"), SGLang ("longer than the
# model's context length"), TGI ("must be <= 4096"), llama.cpp ("exceeds the available context size").
_TOO_LONG = re.compile(r"context|too long|must be <=|exceeds", re.IGNORECASE)
_ERROR_BODY_BYTES = 64 << 10
_CHARS_PER_TOKEN = 4  # English-like text, for a server that reports no usage
_PER_MESSAGE_TOKENS = 4


class _Retry(Exception):
    """A try failed in a way another try may not (unreachable, 5xx, a cut stream)."""


@dataclass(frozen=True)
class _Call:
    body: bytes
    continued: int
    """Answer tokens the server was given to continue (0: a fresh answer)."""


class ServerEngine:
    """Implements the worker's engine protocol over HTTP; the ``httpx.AsyncClient`` belongs to whoever made it."""

    max_model_len: int | None = None  # the server checks prompt + max_tokens itself, and answers 400

    def __init__(self, http: httpx.AsyncClient, settings: WorkerSettings, *, api_key: str | None) -> None:
        if settings.engine_url is None:
            raise ValueError("a ServerEngine needs settings.engine_url")
        self.http = http
        self.url = settings.engine_url.rstrip("/") + "/chat/completions"
        self.model_name = settings.served_model_name or settings.model
        self.continue_from_text = settings.continue_from_text
        self._retries = settings.engine_retries
        self._max_bytes = settings.engine_max_response_bytes
        self._headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"

    def prepare(self, messages: list[ChatMessage]) -> list[ChatMessage]:
        return list(messages)

    def prompt_tokens(self, prompt: list[ChatMessage]) -> None:
        return None

    def resume(self, checkpoint: Checkpoint | None) -> Progress:
        """Continue a checkpoint's text when the server can and the text is whole: all of it streamed (else the
        stream's next offset has no text to match) and not ending inside a character (a vLLM worker's)."""
        if checkpoint is None:
            return Progress()
        held = checkpoint.tokens
        streamed = checkpoint.streamed_tokens is None or checkpoint.streamed_tokens >= held
        if self.continue_from_text and held and streamed and not checkpoint.text.endswith("\ufffd"):
            return Progress.from_text(checkpoint)
        return Progress.restart(checkpoint)

    def text(self, progress: Progress, tokens: int | None = None) -> str:
        if tokens is None or tokens >= progress.tokens:
            return "".join(piece.text for piece in progress.pieces)
        parts, held = [], 0
        for piece in progress.pieces:
            if held + piece.tokens > tokens:
                break
            parts.append(piece.text)
            held += piece.tokens
        return "".join(parts)

    def tail(self, progress: Progress, tokens: int) -> str:
        """The pieces past the first ``tokens`` tokens, walked from the end (a step adds one piece)."""
        parts, held = [], progress.tokens
        for piece in reversed(progress.pieces):
            if held <= tokens:
                break
            parts.append(piece.text)
            held -= piece.tokens
        return "".join(reversed(parts))

    async def generate(
        self,
        prompt: list[ChatMessage],
        params: SamplingParams,
        progress: Progress,
        on_step: OnStep | None = None,
        *,
        logprobs: bool = True,  # always asked for: a streamed chunk's logprobs are how many tokens it carries
    ) -> Generation:
        started = time.perf_counter()
        remaining = params.max_tokens - progress.tokens
        if remaining <= 0:
            return self._generation(progress, "length", progress.tokens, WireUsage(), started)
        call = self._call(prompt, params, progress, remaining)
        reply = await self._with_retries(call, progress, on_step, started)
        usage = reply.usage or _estimated(prompt, progress, call.continued)
        return self._generation(progress, reply.finish or "stop", call.continued, usage, started)

    def _call(self, prompt: list[ChatMessage], params: SamplingParams, progress: Progress, remaining: int) -> _Call:
        req = msgspec.structs.replace(
            ChatRequest.of(self.model_name, prompt, params, logprobs=True),
            max_tokens=remaining,
            stream=True,
            stream_options=StreamOptions(include_usage=True),
        )
        if progress.tokens:  # the rest of a checkpointed answer: the server continues it as its own
            prefix = Message(role="assistant", content=self.text(progress))
            req = msgspec.structs.replace(
                req, messages=[*req.messages, prefix], continue_final_message=True, add_generation_prompt=False
            )
        return _Call(msgspec.json.encode(req), progress.tokens)

    async def _with_retries(self, call: _Call, progress: Progress, on_step: OnStep | None, started: float) -> Reply:
        last = "not tried"
        for attempt in range(self._retries + 1):
            if attempt:
                await asyncio.sleep(backoff_s(attempt - 1))
            before = progress.tokens
            try:
                return await self._stream(call, progress, on_step, started)
            except _Retry as exc:
                last = str(exc)
                if progress.tokens > before:  # another try would send its tokens twice: redeliver the job
                    raise EngineUnavailable(f"engine server {self.url}: the stream broke: {last}") from None
        raise EngineUnavailable(f"engine server {self.url}: {self._retries + 1} tries failed; last: {last}")

    async def _stream(self, call: _Call, progress: Progress, on_step: OnStep | None, started: float) -> Reply:
        try:
            async with self.http.stream("POST", self.url, content=call.body, headers=self._headers) as resp:
                if resp.status_code != 200:
                    raise await self._refusal(resp)
                reply = await read_stream(resp.aiter_bytes(), progress, on_step, started, max_bytes=self._max_bytes)
        except httpx.TransportError as exc:  # refused, reset, timed out (connect, or between two chunks)
            raise _Retry(f"{type(exc).__name__}: {exc}") from None
        except TooLarge as exc:
            raise EngineRefused(ErrorCode.ENGINE_ERROR, f"engine server {self.url}: {exc}") from None
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise EngineRefused(ErrorCode.ENGINE_ERROR, f"engine server {self.url}: unreadable chunk: {exc}") from None
        if reply.finish is None and not reply.done:
            raise _Retry("the stream ended before the answer did")
        return reply

    async def _refusal(self, resp: httpx.Response) -> Exception:
        try:
            message = ErrorBody.text_of(await read_limited(resp.aiter_bytes(), _ERROR_BODY_BYTES))
        except TooLarge:
            message = "(an error body too large to read)"
        status = f"HTTP {resp.status_code}: {message}"
        if resp.status_code in RETRYABLE_STATUS:
            return _Retry(status)
        why = f"engine server answered {status}"
        if resp.status_code == 413 or (resp.status_code in (400, 422) and _TOO_LONG.search(message)):
            return EngineRefused(ErrorCode.PROMPT_TOO_LONG, why)
        if resp.status_code in (400, 422):
            return EngineRefused(ErrorCode.INVALID_REQUEST, why)
        return EngineRefused(ErrorCode.ENGINE_ERROR, why)  # 401/403/404: this pool is misconfigured

    def _generation(
        self, progress: Progress, finish: str, continued: int, usage: WireUsage, started: float
    ) -> Generation:
        served = usage.usage()
        if continued:  # the server prefilled prompt + the checkpointed answer again: billed as re-prefill
            progress.recomputed += served.prompt_tokens
        prompt = max(served.prompt_tokens - continued, 0)
        return Generation(
            text=self.text(progress),
            finish_reason=finish_reason(finish),
            prompt_tokens=prompt,
            cached_prompt_tokens=min(served.cached_prompt_tokens, prompt),
            engine_s=time.perf_counter() - started,
            completion_tokens=continued + served.completion_tokens,
        )


def _estimated(prompt: list[ChatMessage], progress: Progress, continued: int) -> WireUsage:
    """Usage for a server that reports none: the tokens it streamed; the prompt estimated from its size, plus the
    answer it was given to continue."""
    chars = sum(len(m.content) for m in prompt)
    return WireUsage(
        prompt_tokens=-(-chars // _CHARS_PER_TOKEN) + _PER_MESSAGE_TOKENS * len(prompt) + continued,
        completion_tokens=progress.tokens - continued,
    )
