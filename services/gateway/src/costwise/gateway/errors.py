"""OpenAI-style errors: ``{"error": {"message", "type", "param", "code"}}`` with the matching HTTP status."""

from __future__ import annotations

from typing import Any

from costwise.budget import BudgetExceeded
from costwise.contracts import ErrorCode, ErrorInfo

__all__ = ["ApiError", "budget_exceeded", "from_error_info", "idempotency_key_reused", "request_not_found"]

# OpenAI's error ``type`` for each status, which its SDKs turn into exception classes.
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    404: "not_found_error",
    408: "timeout_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
    504: "timeout_error",
}

# How a pipeline's typed error result reaches an HTTP client.
_STATUS: dict[ErrorCode, int] = {
    ErrorCode.MALFORMED_MESSAGE: 400,
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.PROMPT_TOO_LONG: 400,
    ErrorCode.UNKNOWN_POOL: 404,
    ErrorCode.DEADLINE_EXCEEDED: 504,
    ErrorCode.BUDGET_EXCEEDED: 402,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.ENGINE_ERROR: 503,
    ErrorCode.MAX_DELIVERIES_EXCEEDED: 503,
    ErrorCode.INTERNAL: 500,
}


class ApiError(Exception):
    """An error the gateway answers with; ``code`` is an :class:`ErrorCode` value or an OpenAI code."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        kind = _TYPES.get(self.status, "server_error" if self.status >= 500 else "invalid_request_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


def from_error_info(error: ErrorInfo) -> ApiError:
    """The HTTP error for a pipeline's error result (a code added later maps to 500 until listed here)."""
    status = _STATUS.get(error.code, 500)
    # Retrying a request whose deadline passed starts the work over: let the caller decide (and poll).
    headers = {"x-should-retry": "false"} if status == 504 else None
    return ApiError(status, str(error.code), error.message, headers=headers)


def budget_exceeded(refusal: BudgetExceeded) -> ApiError:
    """The HTTP error for a request its tenant's (or API key's) budget cannot cover: 402, and no retry, since
    retrying cannot help until the budget is raised or a new period starts."""
    return ApiError(402, str(refusal.code), refusal.message, headers={"x-should-retry": "false"})


def idempotency_key_reused(request_id: str) -> ApiError:
    """The HTTP error for an Idempotency-Key sent again with a different body: 422 (as the IETF
    Idempotency-Key draft and payment APIs answer), naming the request the key already stands for."""
    return ApiError(
        422,
        "idempotency_key_reused",
        f"this Idempotency-Key was first used with a different body, for request {request_id!r}: "
        "send the same body to get that request's answer, or a new key for a new request",
        param="Idempotency-Key",
        headers={"x-should-retry": "false"},
    )


def request_not_found(request_id: str) -> ApiError:
    """An id the caller's tenant never queued here (another tenant's ids are not found either)."""
    return ApiError(404, "request_not_found", f"no request {request_id!r}", param="request_id")
