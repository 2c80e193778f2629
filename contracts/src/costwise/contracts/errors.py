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
    COST_CEILING_EXCEEDED = "cost_ceiling_exceeded"
    """No backend can answer within the request's cost ceiling."""
    NO_BACKEND_AVAILABLE = "no_backend_available"
    """Every backend that could serve the request failed (each attempt is in the result's route)."""
    PROVIDER_ERROR = "provider_error"
    """An external provider refused or failed the call after retries."""
    INTERNAL = "internal"
    """A bug in costwise; the dead letter has the details."""
    BUDGET_EXCEEDED = "budget_exceeded"
    """The tenant's budget for the period cannot cover this request's estimated cost (nothing was spent;
    HTTP 402 at the gateway)."""
    RATE_LIMITED = "rate_limited"
    """The tenant is spending or sending faster than allowed; retry later (HTTP 429 at the gateway)."""
    UNKNOWN_TENANT = "unknown_tenant"
    """An event names a tenant the service was not configured to accept."""
    UNPRICED = "unpriced"
    """Billing has no price basis for what an event names (a backend outside every tier, a missing price)."""
    CALLBACK_REFUSED = "callback_refused"
    """The callback URL is not allowed (scheme, or an address on a private, loopback or metadata network)."""
    CALLBACK_FAILED = "callback_failed"
    """The callback URL did not accept the result (2xx) within the retry window."""
    CALLBACK_GONE = "callback_gone"
    """The callback URL answered 410 Gone: the receiver asked us to stop sending."""
    TENANT_MISMATCH = "tenant_mismatch"
    """The payload names another tenant than the subject it was published on (the subject is the authority:
    NATS permissions are per subject). Answered to the subject's tenant, never the payload's."""
