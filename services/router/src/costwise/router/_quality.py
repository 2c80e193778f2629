"""The cascade's quality check: is the small tier's answer good enough to serve, or must it escalate?"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from costwise.contracts import Completion

__all__ = ["Verdict", "check"]

# Refusals and non-answers a small model gives when it is out of its depth.
_REFUSAL = re.compile(
    r"^\s*(i('| a)m (sorry|not sure|unable)|i can(no|')t (help|answer|assist)|as an ai\b|i don'?t know)",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Verdict:
    accept: bool
    confidence: float
    """Geometric-mean probability of the answer's tokens (0 to 1); 0 when unknown."""
    reason: str = ""


def check(done: Completion, *, floor: float, min_logprob: float) -> Verdict:
    """Accept a complete, non-empty, non-refusing answer whose tokens the model was confident about."""
    summary = done.logprobs
    confidence = math.exp(summary.mean) if summary and summary.count else 0.0
    if done.finish_reason != "stop":
        return Verdict(False, confidence, f"finish_reason={done.finish_reason} (truncated or aborted)")
    if not done.text.strip():
        return Verdict(False, confidence, "empty answer")
    if _REFUSAL.match(done.text):
        return Verdict(False, confidence, "refused or unsure")
    if summary is None or not summary.count:
        return Verdict(False, confidence, "no token logprobs to judge confidence by")
    if confidence < floor:
        return Verdict(False, confidence, f"confidence {confidence:.2f} < floor {floor:.2f}")
    if summary.min < min_logprob:
        return Verdict(False, confidence, f"least likely token logprob {summary.min:.1f} < {min_logprob:.1f}")
    return Verdict(True, confidence)
