"""The HTTP API's bodies (pydantic, so FastAPI validates them and publishes them in the OpenAPI document).

Every limit the wire contract (``costwise.contracts.messages``) sets is read from it (see ``_contract``), so
what clients read here is what the queue accepts; the few bounds only the gateway sets say why. The request
is decoded once more as an :class:`InferenceRequest` when it is published, so the contract stays the authority.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from costwise.contracts import CachePolicy, ChatMessage, InferenceRequest, SamplingParams
from costwise.contracts.messages import RequestId

from ._contract import bounded, wire

__all__ = [
    "AcceptedRequest",
    "AsyncCompletionRequest",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "Choice",
    "CompletionUsage",
    "CostwiseOptions",
    "ErrorBody",
    "ErrorResponse",
    "InputMessage",
    "ModelCard",
    "ModelList",
    "RequestIdText",
    "RequestStatus",
    "StreamOptions",
]

# The contract's request id (a subject token), as an HTTP path parameter.
RequestIdText = Annotated[str, bounded(wire(RequestId))]
Text = Annotated[str, bounded(wire(ChatMessage, "content"))]
# A metadata value; ``user`` becomes one too, so it shares the bound.
MetadataText = Annotated[str, bounded(wire(InferenceRequest, "metadata", "value_type"))]
MaxTokens = Annotated[int, bounded(wire(SamplingParams, "max_tokens"))]
StopText = Annotated[str, bounded(wire(SamplingParams, "stop", "item_type"))]
# The gateway's own bounds below keep inputs the contract leaves open finite (and fuzzable): a text split in
# at most 64 parts, metadata keys ≤ 64 chars, a cache TTL ≤ a year, a cost ceiling ≤ $1M, a seed in int64.
_MAX_PARTS = 64
_MAX_METADATA_KEY_CHARS = 64


class _Strict(BaseModel):
    # Unknown fields are an error, not silently ignored: a misspelt parameter must not change nothing.
    model_config = ConfigDict(extra="forbid")


class TextPart(_Strict):
    type: Literal["text"]
    text: Text


class InputMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | Annotated[list[TextPart], Field(max_length=_MAX_PARTS)]
    name: Annotated[str, bounded(wire(ChatMessage, "name"))] | None = None


class CacheOptions(_Strict):
    mode: Literal["use", "bypass", "refresh"] = "use"
    allow_sampled: bool = False
    ttl_s: Annotated[int, bounded(wire(CachePolicy, "ttl_s"), le=365 * 24 * 3600)] | None = None
    semantic: bool = True
    target_precision: Annotated[float, bounded(wire(CachePolicy, "target_precision"))] | None = None


class CostwiseOptions(_Strict):
    """costwise's own knobs; with the openai SDK: ``extra_body={"costwise": {...}}``."""

    cache: CacheOptions | None = None
    priority: Literal["interactive", "standard", "batch"] = "standard"
    quality_floor: Annotated[float, bounded(wire(InferenceRequest, "quality_floor"))] | None = None
    cost_ceiling_usd: Annotated[float, bounded(wire(InferenceRequest, "cost_ceiling_usd"), le=1e6)] | None = None
    metadata: (
        Annotated[
            dict[Annotated[str, Field(max_length=_MAX_METADATA_KEY_CHARS)], MetadataText],
            bounded(wire(InferenceRequest, "metadata")),
        ]
        | None
    ) = None


class StreamOptions(_Strict):
    include_usage: bool | None = None
    """Send one more chunk before ``[DONE]``, with no choices and the request's usage."""


class ChatCompletionRequest(_Strict):
    """OpenAI's chat completion request (the subset costwise serves)."""

    model: Annotated[str, bounded(wire(InferenceRequest, "model"))] = Field(
        description="A tier (`small`, `large`), `auto` (the router decides) or a concrete model name."
    )
    messages: Annotated[list[InputMessage], bounded(wire(InferenceRequest, "messages"))]
    max_tokens: MaxTokens | None = None
    max_completion_tokens: MaxTokens | None = None
    temperature: Annotated[float, bounded(wire(SamplingParams, "temperature"))] | None = None
    top_p: Annotated[float, bounded(wire(SamplingParams, "top_p"))] | None = None
    stop: StopText | Annotated[list[StopText], bounded(wire(SamplingParams, "stop"))] | None = None
    seed: Annotated[int, Field(ge=-(2**63), lt=2**63)] | None = None
    n: Literal[1] | None = None
    stream: bool | None = Field(
        None,
        description="Answer with Server-Sent Events: `chat.completion.chunk`s as tokens are generated, then "
        '`data: [DONE]` (an error mid-stream is an `{"error": …}` event). `POST /v1/requests` refuses it.',
    )
    stream_options: StreamOptions | None = None
    user: MetadataText | None = None
    costwise: CostwiseOptions | None = None


class AsyncCompletionRequest(ChatCompletionRequest):
    """A chat completion to run in the background; the result is polled or POSTed to ``callback_url``.

    A ``callback_url`` is checked when the request is submitted: the tenant must have a webhook signing secret
    (400 ``invalid_request`` otherwise) and the URL's host must resolve to public addresses only, or to ones the
    operator allow-listed (400 ``callback_refused`` otherwise)."""

    callback_url: Annotated[str, bounded(wire(InferenceRequest, "callback_url"), pattern=r"^https?://")] | None = None


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


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
    finish_reason: Literal["stop", "length", "abort"] | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    """One Server-Sent Event of a streamed chat completion (``data: <this>``)."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: CompletionUsage | None = None
    costwise: CostwiseInfo | None = None
    """On the last chunk (with ``finish_reason``): where the answer came from and what it cost."""


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "costwise"
    costwise_kind: Literal["auto", "tier", "alias", "model"]
    """``auto`` (the router decides), a catalog tier or an alias of one, or a concrete model a backend runs."""


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


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


class WrongHitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(default="", max_length=500)


class WrongHitReport(BaseModel):
    id: str
    object: Literal["costwise.wrong_hit"] = "costwise.wrong_hit"
    status: Literal["reported"] = "reported"


class RequestStatus(BaseModel):
    id: str
    object: Literal["costwise.request"] = "costwise.request"
    status: Literal["queued", "completed", "failed"]
    result: ChatCompletion | None = None
    error: ErrorBody | None = None
