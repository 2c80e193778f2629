"""The wire: every message costwise sends, as versioned msgspec Structs.

Rules (see docs/architecture.md): JSON, map-encoded (never ``array_like``), keyword-only, tagged with
``<name>.v1``. A new field must have a default; a type change or a reused tag needs a v2. Decoders ignore
unknown fields so an old consumer can read a newer producer's message.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from ._base import EpochMs, JobId, NonNegInt, RequestId, Token, Url
from ._base import Wire as _Wire
from ._control import CacheInvalidation, CacheWrongHit, DeadLetter, MaxDeliveriesAdvisory, WebhookFailed
from .errors import ErrorCode

__all__ = [
    "Attempt",
    "CacheHit",
    "CacheInvalidation",
    "CachePolicy",
    "CacheWrongHit",
    "ChatMessage",
    "Checkpoint",
    "Completion",
    "DeadLetter",
    "EngineTimings",
    "ErrorInfo",
    "InferenceRequest",
    "Job",
    "LogprobSummary",
    "MaxDeliveriesAdvisory",
    "Output",
    "Result",
    "SamplingParams",
    "StreamDelta",
    "Usage",
    "UsageEvent",
    "WebhookFailed",
]

MAX_MESSAGE_CHARS = 200_000
MAX_MESSAGES = 256


class ChatMessage(msgspec.Struct, frozen=True, kw_only=True):
    """One OpenAI-style chat message."""

    role: Literal["system", "user", "assistant", "tool"]
    content: Annotated[str, Meta(max_length=MAX_MESSAGE_CHARS)]
    name: Annotated[str, Meta(max_length=64)] | None = None


class SamplingParams(msgspec.Struct, frozen=True, kw_only=True):
    """Every parameter that changes the output (and so belongs in a cache key)."""

    max_tokens: Annotated[int, Meta(ge=1, le=32_768)] = 256
    temperature: Annotated[float, Meta(ge=0.0, le=2.0)] = 0.0
    top_p: Annotated[float, Meta(gt=0.0, le=1.0)] = 1.0
    stop: Annotated[list[Annotated[str, Meta(max_length=64)]], Meta(max_length=8)] = []
    seed: int | None = None


class CachePolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How the cache may treat this request."""

    mode: Literal["use", "bypass", "refresh"] = "use"
    allow_sampled: bool = False
    """Cache answers sampled with temperature > 0 (off by default: they are not reproducible)."""
    ttl_s: Annotated[int, Meta(ge=0)] | None = None
    semantic: bool = True
    """Allow answers to differently worded but equivalent questions (each such hit is verified)."""
    target_precision: Annotated[float, Meta(ge=0.5, le=0.999)] | None = None
    """Precision the semantic hit verifier is calibrated to (default: the service's); higher = fewer hits."""


class InferenceRequest(_Wire, frozen=True, kw_only=True, tag="inference_request.v1"):
    """What an application publishes to ``subjects.requests(tenant)`` (``subjects.entry``: with cache mode
    ``bypass``, ``subjects.route(tenant)``).

    ``request_id`` is the idempotency key: republishing the same id within the dedup window is a no-op.
    """

    request_id: RequestId
    tenant: Token
    messages: Annotated[list[ChatMessage], Meta(min_length=1, max_length=MAX_MESSAGES)]
    model: Annotated[str, Meta(min_length=1, max_length=128)] = "auto"
    """A tier name (``auto``, ``small``, ``large``) or a concrete model name."""
    sampling: SamplingParams = SamplingParams()
    priority: Literal["interactive", "standard", "batch"] = "standard"
    deadline_ms: EpochMs | None = None
    """Absolute deadline (Unix ms); past it the caller gets ``deadline_exceeded``."""
    cache: CachePolicy = CachePolicy()
    callback_url: Url | None = None
    quality_floor: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    cost_ceiling_usd: Annotated[float, Meta(ge=0.0)] | None = None
    created_ms: EpochMs = 0
    metadata: Annotated[dict[str, Annotated[str, Meta(max_length=256)]], Meta(max_length=16)] = {}
    api_key_id: Token | None = None
    """Public id of the API key the request came in with (never the secret): the gateway sets it from the
    authenticated key; a publisher on the queue may set its own. Budgets and the ledger are kept per key."""
    stream: bool = False
    """Publish the answer's tokens as :class:`StreamDelta` messages on ``subjects.deltas(tenant, request_id)``
    while they are generated. The :class:`Result` is published exactly as without it."""


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True):
    """Partial output of an interrupted job, so the next worker continues instead of starting over."""

    token_ids: list[int]
    text: str
    logprob_sum: float = 0.0
    logprob_min: float = 0.0
    logprob_count: NonNegInt = 0
    worker_id: str = ""
    first_token_ms: EpochMs | None = None
    recomputed_tokens: NonNegInt = 0
    """Prompt tokens earlier resumes of this job prefilled again (a job preempted more than once)."""
    streamed_tokens: NonNegInt | None = None
    """For a streamed job: how many of its tokens its stream carried (a step ending inside a character waits
    for the next), so the resuming worker's first :class:`StreamDelta` starts there. ``None``: all of them."""
    text_tokens: NonNegInt | None = None
    """Set when ``token_ids`` is empty because the engine (an engine server or a provider's API) gave text, not
    token ids: how many tokens ``text`` holds, as it was streamed. ``None``: ``len(token_ids)``."""

    @property
    def tokens(self) -> int:
        """How many tokens of the answer this checkpoint holds (token ids, or streamed text)."""
        return len(self.token_ids) if self.text_tokens is None else self.text_tokens


class Job(_Wire, frozen=True, kw_only=True, tag="job.v1"):
    """A request assigned to one backend (``subjects.jobs(pool)``: a worker pool or a provider)."""

    job_id: JobId
    request: InferenceRequest
    pool: Token
    attempt: Annotated[int, Meta(ge=1)] = 1
    stage: Literal["direct", "cascade_small", "cascade_large", "batch"] = "direct"
    checkpoint: Checkpoint | None = None
    prefix_hash: str | None = None
    """Hash of everything before the last message: jobs sharing it reuse the engine's prefix cache."""
    routed_ms: EpochMs = 0
    tier: str | None = None
    """The catalog tier this attempt runs in."""
    attempts: Annotated[list[Attempt], Meta(max_length=16)] = []
    """Earlier attempts of the same request (escalated or failed), so the router can stay stateless."""

    @property
    def streams(self) -> bool:
        """Whether this job's tokens go out as deltas as they are generated. A cascade's small stage does not
        stream: its answer may still be escalated, and a stream cannot take back what it sent (the accepted
        answer reaches the client with the result)."""
        return self.request.stream and not self.judged

    @property
    def judged(self) -> bool:
        """Whether the router judges this job's answer before serving it (a cascade's small stage): only such an
        answer's token logprobs are read, and an engine need not compute them for any other (vLLM's output handling
        of one logprob per token doubled to tripled its CPU per token; docs/benchmarks.md)."""
        return self.stage == "cascade_small"


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    prompt_tokens: NonNegInt = 0
    completion_tokens: NonNegInt = 0
    cached_prompt_tokens: NonNegInt = 0
    """Prompt tokens served from the engine's prefix cache."""


class Attempt(msgspec.Struct, frozen=True, kw_only=True):
    """One backend's try at a request, as the result reports it (the route taken, and what it cost)."""

    backend: str
    tier: str | None = None
    stage: Literal["direct", "cascade_small", "cascade_large", "batch"] = "direct"
    model: str = ""
    outcome: Literal["accepted", "escalated", "failed"]
    reason: Annotated[str, Meta(max_length=1024)] = ""
    """Why it was escalated or failed (empty when accepted)."""
    usage: Usage = Usage()
    cost_usd: float = 0.0
    spot: bool = False
    worker_id: str = ""


class LogprobSummary(msgspec.Struct, frozen=True, kw_only=True):
    """What a cascade's quality check needs of the sampled tokens' log-probabilities."""

    mean: float
    min: float
    count: NonNegInt


class EngineTimings(msgspec.Struct, frozen=True, kw_only=True):
    queued_s: float = 0.0
    """Time the job waited in the worker before the engine started it."""
    first_token_s: float = 0.0
    engine_s: float = 0.0
    """Engine time for this attempt (excluding any checkpointed earlier attempt)."""


class Completion(_Wire, frozen=True, kw_only=True, tag="completion.v1"):
    """A worker's answer to one job (``subjects.completions(pool)``)."""

    job: Job
    worker_id: str
    spot: bool
    model: str
    text: str
    finish_reason: Literal["stop", "length", "abort"]
    usage: Usage
    logprobs: LogprobSummary | None = None
    timings: EngineTimings = EngineTimings()
    resumed_tokens: NonNegInt = 0
    """Tokens taken from a checkpoint instead of being generated again."""
    completed_ms: EpochMs = 0
    error: ErrorInfo | None = None
    """Set when the backend failed this attempt (``text`` is then empty): the router fails over."""


class Output(msgspec.Struct, frozen=True, kw_only=True):
    text: str
    finish_reason: Literal["stop", "length", "abort"]


class CacheHit(msgspec.Struct, frozen=True, kw_only=True):
    """How a cached answer matched: which earlier request it came from, and how close it was."""

    kind: Literal["exact", "semantic"]
    cached_request_id: RequestId
    similarity: Annotated[float, Meta(ge=-1.0, le=1.0)] = 1.0
    saved: Usage = Usage()
    """Tokens the cached answer cost when it was generated: what this hit did not spend again."""
    compute_s: Annotated[float, Meta(ge=0.0)] = 0.0
    """What serving the hit took on the cache: lookups (wall), embedding (its share of the batch's CPU) and
    verification (CPU), in seconds; billing prices it. ``0`` when not measured."""


class ErrorInfo(msgspec.Struct, frozen=True, kw_only=True):
    code: ErrorCode
    message: str


class Result(_Wire, frozen=True, kw_only=True, tag="result.v1"):
    """The final answer to a request, success or typed error (``subjects.results(tenant, id)``).

    Exactly one of ``output`` and ``error`` is set.
    """

    request_id: RequestId
    tenant: Token
    status: Literal["ok", "error"]
    output: Output | None = None
    error: ErrorInfo | None = None
    source: Literal["engine", "cache_exact", "cache_semantic", "provider", "none"] = "none"
    model: str | None = None
    pool: str | None = None
    usage: Usage = Usage()
    cost_usd: float = 0.0
    callback_url: Url | None = None
    created_ms: EpochMs = 0
    completed_ms: EpochMs = 0
    cache: CacheHit | None = None
    """Set when the cache answered (``source`` is ``cache_exact`` or ``cache_semantic``)."""
    route: Annotated[list[Attempt], Meta(max_length=16)] = []
    """Every backend attempt, in order; the last one produced ``output`` (or the error)."""
    api_key_id: Token | None = None
    """The request's :attr:`InferenceRequest.api_key_id`."""


class UsageEvent(_Wire, frozen=True, kw_only=True, tag="usage_event.v1"):
    """Resources one job attempt consumed; billing's raw material."""

    request_id: RequestId
    job_id: JobId
    tenant: Token
    pool: Token
    worker_id: str
    spot: bool
    model: str
    usage: Usage
    engine_s: float
    ts_ms: EpochMs
    stage: Literal["direct", "cascade_small", "cascade_large", "batch"] = "direct"
    """The job's stage (from :attr:`Job.stage`): billing attributes cascade escalations to the routing lever."""
    attempt: Annotated[int, Meta(ge=1)] = 1
    """The job's attempt (from :attr:`Job.attempt`); part of billing's idempotency key."""
    api_key_id: Token | None = None
    """The request's :attr:`InferenceRequest.api_key_id`."""
    recomputed_prompt_tokens: NonNegInt = 0
    """Tokens this job prefilled again because it resumed from a checkpoint (prompt + checkpointed output, per
    resume): engine work on top of ``usage``, billed at the input price."""
    kind: Literal["job", "cache_lookup", "cache_wrong_hit"] = "job"
    """What the event records: a job attempt (``job``); the cache's semantic lookup for a request it then did not
    answer (``cache_lookup``: ``engine_s`` = the seconds it measured, ``pool`` = ``cache``; billed to the tenant as
    the cache's overhead); or that a cache hit was reported wrong (``cache_wrong_hit``: nothing consumed, the
    report counts them). ``job_id`` is then the request id."""


class StreamDelta(_Wire, frozen=True, kw_only=True, tag="stream_delta.v1"):
    """Tokens of a streamed request as they are generated (core NATS, ``subjects.deltas(tenant, request_id)``).

    A delta covers the answer's tokens ``[offset, offset + tokens)`` and ``text`` is exactly what they add to
    the decoded answer, so concatenating the deltas in offset order gives the result's text. A job resumed from a
    checkpoint continues where the stream got to (:attr:`Checkpoint.streamed_tokens`); a regenerated one starts
    at 0 again, so a reader drops offsets it has seen and treats a jump as a gap (the :class:`Result`, which
    always follows, has the whole text).
    """

    request_id: RequestId
    tenant: Token
    offset: NonNegInt
    """Token offset of this delta's first token in the answer."""
    text: str
    tokens: NonNegInt
    """How many tokens this delta covers (several when the engine produced them in one step)."""
    model: str = ""
    final: bool = False
    """The generation ended with this delta (the request's result follows; a cascade may still escalate)."""
    finish_reason: Literal["stop", "length", "abort"] | None = None
    error: ErrorInfo | None = None
    """This attempt failed mid-stream; the request may still fail over. The result is the authority."""
