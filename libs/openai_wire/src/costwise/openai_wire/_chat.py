"""``POST /chat/completions`` as msgspec Structs: the request, the answer, the streamed chunk and the error body.

Both directions use them: costwise's clients (the provider worker, the worker fronting an engine server) encode
requests and decode answers; the bench's recording server decodes requests and encodes answers. Fields costwise
does not use are left out: decoders ignore them, so any OpenAI-compatible server's extra fields pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from costwise.contracts import ChatMessage, LogprobSummary, SamplingParams, Usage
from costwise.contracts.messages import MAX_MESSAGE_CHARS, MAX_MESSAGES

__all__ = [
    "ChatChunk",
    "ChatCompletion",
    "ChatRequest",
    "Choice",
    "ChunkChoice",
    "Delta",
    "ErrorBody",
    "ErrorDetail",
    "Logprobs",
    "Message",
    "PromptDetails",
    "StreamOptions",
    "TokenLogprob",
    "WireUsage",
    "estimated_usage",
    "finish_reason",
    "logprob_summary",
]

Finish = Literal["stop", "length", "abort"]
_CHARS_PER_TOKEN = 4
_PER_MESSAGE_TOKENS = 4


class Message(msgspec.Struct, kw_only=True, omit_defaults=True):
    role: Annotated[str, Meta(max_length=32)]
    content: Annotated[str, Meta(max_length=MAX_MESSAGE_CHARS)] | None = None
    name: Annotated[str, Meta(max_length=64)] | None = None


class StreamOptions(msgspec.Struct, kw_only=True, omit_defaults=True):
    include_usage: bool = False


class ChatRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A chat-completions request. ``continue_final_message`` / ``add_generation_prompt`` are vLLM's and SGLang's
    extension: continue the final (assistant) message instead of starting a new one."""

    model: Annotated[str, Meta(min_length=1, max_length=256)]
    messages: Annotated[list[Message], Meta(min_length=1, max_length=MAX_MESSAGES + 1)]
    max_tokens: Annotated[int, Meta(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Meta(ge=1)] | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: bool | None = None
    continue_final_message: bool | None = None
    add_generation_prompt: bool | None = None

    @classmethod
    def of(cls, model: str, messages: list[ChatMessage], sampling: SamplingParams, *, logprobs: bool) -> ChatRequest:
        """A request for ``messages`` with ``sampling``; ``logprobs`` asks for the sampled tokens' log-probabilities
        (what the cascade's quality check reads, when the server has them)."""
        return cls(
            model=model,
            messages=[Message(role=m.role, content=m.content, name=m.name) for m in messages],
            max_tokens=sampling.max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=sampling.seed,
            stop=list(sampling.stop) or None,
            logprobs=logprobs or None,
        )

    @property
    def token_limit(self) -> int | None:
        """The most tokens the answer may have (``max_completion_tokens`` is OpenAI's newer name)."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class TokenLogprob(msgspec.Struct, kw_only=True):
    logprob: float


class Logprobs(msgspec.Struct, kw_only=True):
    content: list[TokenLogprob] | None = None

    def values(self) -> list[float]:
        return [t.logprob for t in self.content or ()]


class PromptDetails(msgspec.Struct, kw_only=True):
    cached_tokens: int = 0


class WireUsage(msgspec.Struct, kw_only=True):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptDetails | None = None

    def usage(self) -> Usage:
        cached = self.prompt_tokens_details.cached_tokens if self.prompt_tokens_details else 0
        prompt, completion = max(self.prompt_tokens, 0), max(self.completion_tokens, 0)
        return Usage(
            prompt_tokens=prompt, completion_tokens=completion, cached_prompt_tokens=min(max(cached, 0), prompt)
        )


class Choice(msgspec.Struct, kw_only=True):
    index: int = 0
    message: Message
    finish_reason: str | None = None
    logprobs: Logprobs | None = None


class ChatCompletion(msgspec.Struct, kw_only=True):
    """A non-streamed answer (``object: chat.completion``)."""

    id: str = ""
    object: str = "chat.completion"
    created: int = 0
    model: str = ""
    choices: list[Choice]
    usage: WireUsage | None = None


class Delta(msgspec.Struct, kw_only=True, omit_defaults=True):
    role: str | None = None
    content: str | None = None


class ChunkChoice(msgspec.Struct, kw_only=True):
    index: int = 0
    delta: Delta = msgspec.field(default_factory=Delta)
    finish_reason: str | None = None
    logprobs: Logprobs | None = None


class ChatChunk(msgspec.Struct, kw_only=True):
    """One server-sent event of a streamed answer (``object: chat.completion.chunk``); with
    ``stream_options.include_usage`` the last one has no choices and carries the usage."""

    id: str = ""
    object: str = "chat.completion.chunk"
    created: int = 0
    model: str = ""
    choices: list[ChunkChoice] = []
    usage: WireUsage | None = None


class ErrorDetail(msgspec.Struct, kw_only=True):
    message: str = ""
    type: str = ""
    param: str | None = None
    code: str | int | None = None


class ErrorBody(msgspec.Struct, kw_only=True, omit_defaults=True):
    """OpenAI's error body, ``{"error": {...}}``; some servers (older vLLM) put ``message`` at the top."""

    error: ErrorDetail | None = None
    message: str | None = None

    @classmethod
    def text_of(cls, data: bytes, limit: int = 500) -> str:
        """The error message in a response body, or its first ``limit`` characters when it is no error body."""
        try:
            body = msgspec.json.decode(data, type=cls)
        except (msgspec.DecodeError, msgspec.ValidationError):
            body = cls()
        found = body.error.message if body.error is not None else body.message
        return (found or data.decode("utf-8", "replace"))[:limit]


def finish_reason(value: str | None) -> Finish:
    """The finish reasons costwise knows; anything else a server says (``tool_calls``, ``abort``) is an abort."""
    if value in ("stop", "length"):
        return value  # type: ignore[return-value]
    return "abort"


def estimated_usage(messages: Sequence[ChatMessage], completion_tokens: int) -> Usage:
    """Usage for a server that reports none: the answer's tokens as counted from its stream, the prompt estimated
    from its size (English-like text: ~4 characters a token, plus a few per message for the chat template)."""
    chars = sum(len(m.content) for m in messages)
    prompt = -(-chars // _CHARS_PER_TOKEN) + _PER_MESSAGE_TOKENS * len(messages)
    return Usage(prompt_tokens=prompt, completion_tokens=max(completion_tokens, 0))


def logprob_summary(values: list[float]) -> LogprobSummary | None:
    """What the cascade's quality check needs of the sampled tokens' log-probabilities (``None``: none given)."""
    if not values:
        return None
    return LogprobSummary(mean=sum(values) / len(values), min=min(values), count=len(values))
