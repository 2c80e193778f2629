"""The HTTP API's bodies (pydantic, so FastAPI validates them and publishes them in the OpenAPI document).

Limits mirror the wire contract's (``costwise.contracts.messages``); the request is decoded once more as an
:class:`InferenceRequest`, so the contract stays the authority and these limits are what clients read.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from costwise.contracts.messages import MAX_MESSAGE_CHARS, MAX_MESSAGES, RequestId

__all__ = [
    "AcceptedRequest",
    "AsyncCompletionRequest",
    "ChatCompletion",
    "ChatCompletionRequest",
    "Choice",
    "CompletionUsage",
    "CostwiseOptions",
    "ErrorBody",
    "ErrorResponse",
    "InputMessage",
    "RequestIdText",
    "RequestStatus",
]

# The contract's request id (a subject token), as an HTTP path parameter.
RequestIdText = Annotated[
    str, Field(pattern=RequestId.__metadata__[0].pattern, max_length=RequestId.__metadata__[0].max_length)
]
Short = Annotated[str, Field(max_length=256)]
Text = Annotated[str, Field(max_length=MAX_MESSAGE_CHARS)]


class _Strict(BaseModel):
    # Unknown fields are an error, not silently ignored: a misspelt parameter must not change nothing.
    model_config = ConfigDict(extra="forbid")


class TextPart(_Strict):
    type: Literal["text"]
    text: Text


class InputMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | Annotated[list[TextPart], Field(max_length=64)]
    name: Annotated[str, Field(max_length=64)] | None = None


class CacheOptions(_Strict):
    mode: Literal["use", "bypass", "refresh"] = "use"
    allow_sampled: bool = False
    ttl_s: Annotated[int, Field(ge=0, le=365 * 24 * 3600)] | None = None
    semantic: bool = True
    target_precision: Annotated[float, Field(ge=0.5, le=0.999)] | None = None


class CostwiseOptions(_Strict):
    """costwise's own knobs; with the openai SDK: ``extra_body={"costwise": {...}}``."""

    cache: CacheOptions | None = None
    priority: Literal["interactive", "standard", "batch"] = "standard"
    quality_floor: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    cost_ceiling_usd: Annotated[float, Field(ge=0.0, le=1e6)] | None = None
    metadata: Annotated[dict[Annotated[str, Field(max_length=64)], Short], Field(max_length=16)] | None = None


class ChatCompletionRequest(_Strict):
    """OpenAI's chat completion request (the subset costwise serves)."""

    model: Annotated[str, Field(min_length=1, max_length=128)] = Field(
        description="A tier (`small`, `large`), `auto` (the router decides) or a concrete model name."
    )
    messages: Annotated[list[InputMessage], Field(min_length=1, max_length=MAX_MESSAGES)]
    max_tokens: Annotated[int, Field(ge=1, le=32_768)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1, le=32_768)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    stop: (
        Annotated[str, Field(max_length=64)]
        | Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=8)]
        | None
    ) = None
    seed: Annotated[int, Field(ge=-(2**63), lt=2**63)] | None = None
    n: Literal[1] | None = None
    # Documented as false-only (that is what is served); ``true`` still parses, to get its own clear 400.
    stream: Annotated[
        bool | None,
        WithJsonSchema(
            {"anyOf": [{"const": False}, {"type": "null"}], "description": "Streaming is not supported yet."}
        ),
    ] = None
    user: Short | None = None
    costwise: CostwiseOptions | None = None


class AsyncCompletionRequest(ChatCompletionRequest):
    """A chat completion to run in the background; the result is polled or POSTed to ``callback_url``."""

    callback_url: Annotated[str, Field(max_length=2048, pattern=r"^https?://")] | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length", "abort"]
    logprobs: None = None


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CostwiseInfo(BaseModel):
    """Where the answer came from and what it cost (costwise's addition to the OpenAI body)."""

    request_id: str
    source: str
    cost_usd: float
    pool: str | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage
    costwise: CostwiseInfo


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class AcceptedRequest(BaseModel):
    id: str
    object: Literal["costwise.request"] = "costwise.request"
    status: Literal["queued"] = "queued"


class RequestStatus(BaseModel):
    id: str
    object: Literal["costwise.request"] = "costwise.request"
    status: Literal["queued", "completed", "failed"]
    result: ChatCompletion | None = None
    error: ErrorBody | None = None
