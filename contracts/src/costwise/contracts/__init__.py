"""costwise wire contracts: messages, error codes, and every subject/stream/consumer name."""

from . import subjects
from ._clock import Clock, now_ms
from .codec import DecodeError, decode, encode
from .errors import ErrorCode
from .messages import (
    Attempt,
    CacheHit,
    CacheInvalidation,
    CachePolicy,
    ChatMessage,
    Checkpoint,
    Completion,
    DeadLetter,
    EngineTimings,
    ErrorInfo,
    InferenceRequest,
    Job,
    LogprobSummary,
    MaxDeliveriesAdvisory,
    Output,
    Result,
    SamplingParams,
    Usage,
    UsageEvent,
    WebhookFailed,
)

__all__ = [
    "Attempt",
    "CacheHit",
    "CacheInvalidation",
    "CachePolicy",
    "ChatMessage",
    "Checkpoint",
    "Clock",
    "Completion",
    "DeadLetter",
    "DecodeError",
    "EngineTimings",
    "ErrorCode",
    "ErrorInfo",
    "InferenceRequest",
    "Job",
    "LogprobSummary",
    "MaxDeliveriesAdvisory",
    "Output",
    "Result",
    "SamplingParams",
    "Usage",
    "UsageEvent",
    "WebhookFailed",
    "decode",
    "encode",
    "now_ms",
    "subjects",
]
