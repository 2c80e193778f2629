"""Error codes a caller can receive in an error result (and a dead letter carries as its reason)."""

from __future__ import annotations

import enum

__all__ = ["ErrorCode"]


class ErrorCode(enum.StrEnum):
    """Stable, machine-readable failure reasons. Add members; never rename or reuse one."""

    MALFORMED_MESSAGE = "malformed_message"
    """The payload is not valid JSON or does not match the contract."""
    INVALID_REQUEST = "invalid_request"
    """The request decoded but asks for something impossible (e.g. no messages)."""
    UNKNOWN_POOL = "unknown_pool"
    """A job names a worker pool that no worker serves."""
    PROMPT_TOO_LONG = "prompt_too_long"
    """Prompt plus max_tokens exceed the model's context window or the size limit."""
    MAX_DELIVERIES_EXCEEDED = "max_deliveries_exceeded"
    """The message failed on every allowed delivery attempt."""
    ENGINE_ERROR = "engine_error"
    """The inference engine failed while generating."""
    DEADLINE_EXCEEDED = "deadline_exceeded"
    """The request's deadline passed before it could be answered."""
    INTERNAL = "internal"
    """A bug in costwise; the dead letter has the details."""
    CALLBACK_REFUSED = "callback_refused"
    """The callback URL is not allowed (scheme, or an address on a private, loopback or metadata network)."""
    CALLBACK_FAILED = "callback_failed"
    """The callback URL did not accept the result (2xx) within the retry window."""
    CALLBACK_GONE = "callback_gone"
    """The callback URL answered 410 Gone: the receiver asked us to stop sending."""
