"""What one call to a provider comes to: an answer, or a typed failure."""

from __future__ import annotations

from dataclasses import dataclass

from costwise.contracts import ErrorCode, LogprobSummary, Usage

__all__ = ["Answer", "Failure"]


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    finish_reason: str
    usage: Usage
    logprobs: LogprobSummary | None
    model: str


@dataclass(frozen=True, slots=True)
class Failure:
    code: ErrorCode
    message: str
