"""The cascade's quality check: accept the small tier's answer, or escalate it with a reason.

Rules first (cheap and certain: truncated, empty, refused, unsure token by token), then, when the caller
passes one, a learned verifier that reads the answer against the prompt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from costwise.contracts import LogprobSummary

from .features import prompt_features, response_features
from .model import ARTIFACT_DIR, LogisticHead, load_arrays, save_arrays

__all__ = ["ResponseVerifier", "Verdict", "check_response", "verifier_matrix"]

DEFAULT_VERIFIER = "verifier.npz"
_REFUSAL = re.compile(
    r"^\W*(?:I(?:'m| am) sorry|I apologi[sz]e|I can(?:no|')t (?:help|assist|answer)|I(?:'m| am) (?:not able|unable) to|"
    r"As an AI)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Verdict:
    """``accept`` or escalate; ``score`` in [0, 1] (higher: more likely good); ``reason`` says which check decided;
    ``checks`` which checks ran (``rules``; ``logprobs`` when the answer had them; ``verifier`` when it was asked)."""

    accept: bool
    score: float
    reason: str
    checks: tuple[str, ...] = ("rules",)


@dataclass(frozen=True)
class ResponseVerifier:
    """P(the answer is right) from the features of the answer and its prompt (:mod:`.features`)."""

    head: LogisticHead
    threshold: float
    """Escalate below this: calibrated with the router on the training split at ``meta["quality"]``."""
    meta: dict[str, Any]

    @classmethod
    def load(cls, path: Path | str | None = None) -> ResponseVerifier:
        """``None``: the shipped verifier (trained on Mixtral-8x7B's GSM8K answers, training split only)."""
        z, meta = load_arrays(ARTIFACT_DIR / DEFAULT_VERIFIER if path is None else Path(path))
        return cls(LogisticHead(z["weights"], float(z["bias"]), z["mean"], z["scale"]), float(z["threshold"]), meta)

    def save(self, path: Path) -> None:
        head = self.head
        save_arrays(
            path,
            self.meta,
            weights=head.weights,
            bias=np.float64(head.bias),
            mean=head.mean,
            scale=head.scale,
            threshold=np.float64(self.threshold),
        )

    @property
    def direct_below(self) -> float | None:
        """The skip threshold chosen together with this verifier (``costwise-bench router-cascade``): where the
        verifier judges the small answer, a prompt goes straight up a tier only when P(small OK) is below it."""
        value = self.meta.get("direct_below")
        return None if value is None else float(value)

    def at(self, *, direct_below: float | None = None, escalate_below: float | None = None) -> ResponseVerifier:
        """This verifier at another operating point (``None`` keeps the one it was shipped with)."""
        meta = self.meta if direct_below is None else {**self.meta, "direct_below": direct_below}
        return replace(self, threshold=self.threshold if escalate_below is None else escalate_below, meta=meta)

    def p_ok(self, prompts: list[str], responses: list[str]) -> np.ndarray[Any, np.dtype[np.float64]]:
        return self.head.predict(verifier_matrix(prompts, responses))


def verifier_matrix(prompts: list[str], responses: list[str]) -> np.ndarray[Any, np.dtype[np.float64]]:
    """The verifier's input: :func:`response_features` followed by :func:`prompt_features`."""
    rows = [np.r_[response_features(p, r), prompt_features(p)] for p, r in zip(prompts, responses, strict=True)]
    return np.array(rows, dtype=np.float64).reshape(len(rows), -1)


def check_response(
    text: str,
    finish_reason: str,
    logprobs: LogprobSummary | None,
    *,
    prompt: str | None = None,
    verifier: ResponseVerifier | None = None,
    min_mean_logprob: float = -1.0,
    min_token_logprob: float = -12.0,
) -> Verdict:
    """Accept the small tier's answer or say why not. The learned ``verifier`` runs only with the ``prompt``."""
    if finish_reason != "stop":
        return Verdict(False, 0.0, "truncated" if finish_reason == "length" else f"finish_reason:{finish_reason}")
    if not text.strip():
        return Verdict(False, 0.0, "empty")
    if _REFUSAL.search(text):
        return Verdict(False, 0.0, "refusal")
    score, checks = 1.0, ["rules"]
    if logprobs is not None and logprobs.count > 0:
        score = float(np.exp(logprobs.mean))  # the geometric-mean token probability
        checks.append("logprobs")
        if logprobs.mean < min_mean_logprob:
            return Verdict(False, score, "low_mean_logprob", tuple(checks))
        if logprobs.min < min_token_logprob:
            return Verdict(False, score, "low_min_logprob", tuple(checks))
    if verifier is not None and prompt is not None:
        p = float(verifier.p_ok([prompt], [text])[0])
        checks.append("verifier")
        if p < verifier.threshold:
            return Verdict(False, p, "verifier", tuple(checks))
        score = min(score, p)
    return Verdict(True, score, "ok", tuple(checks))
