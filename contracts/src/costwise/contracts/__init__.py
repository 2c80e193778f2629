"""costwise wire contracts: messages, error codes, and every subject/stream/consumer name."""

from . import subjects
from .codec import DecodeError, decode, encode
from .errors import ErrorCode
from .messages import (
    CacheHit,
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
    "CacheHit",
    "CachePolicy",
    "ChatMessage",
    "Checkpoint",
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
    "subjects",
]
