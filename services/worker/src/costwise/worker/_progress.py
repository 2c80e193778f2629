"""What a running generation has produced so far, whatever engine produces it, and what one generation ended as."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from costwise.contracts import Checkpoint, LogprobSummary

__all__ = ["Generation", "Piece", "Progress"]


@dataclass(frozen=True, slots=True)
class Piece:
    """Text an engine server streamed in one chunk, and how many tokens it holds."""

    text: str
    tokens: int


@dataclass
class Progress:
    """What a running generation has produced so far; a checkpoint is taken from it on preemption.

    An engine with token ids (vLLM in-process) fills ``token_ids``; an engine server, which streams text, fills
    ``pieces``. A generation uses one or the other, never both.
    """

    token_ids: list[int] = field(default_factory=list)
    pieces: list[Piece] = field(default_factory=list)
    text_tokens: int = 0
    """Tokens ``pieces`` hold (kept as they are added: summing on every step would be quadratic)."""
    logprob_sum: float = 0.0
    logprob_min: float = 0.0
    logprob_count: int = 0
    resumed: int = 0
    first_token_s: float | None = None
    recomputed: int = 0
    """Prompt tokens prefilled again for this job because it resumed: earlier resumes' (from the checkpoint)
    plus this run's prompt + checkpointed tokens once its prefill is done. Billed on top of the usage."""
    step_text: tuple[int, str] | None = None
    """The text the engine itself decoded for its last step, with the answer's tokens before that step: vLLM
    detokenizes every step as it generates it, so a streamed job's delta need not decode those tokens again."""

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint | None) -> Progress:
        """Continue from ``ckpt``'s token ids."""
        if ckpt is None:
            return cls()
        return cls(
            token_ids=list(ckpt.token_ids),
            logprob_sum=ckpt.logprob_sum,
            logprob_min=ckpt.logprob_min,
            logprob_count=ckpt.logprob_count,
            resumed=len(ckpt.token_ids),
            recomputed=ckpt.recomputed_tokens,
        )

    @classmethod
    def from_text(cls, ckpt: Checkpoint) -> Progress:
        """Continue from ``ckpt``'s text (an engine server continues text; it has no use for token ids)."""
        held = ckpt.tokens
        progress = cls(
            logprob_sum=ckpt.logprob_sum,
            logprob_min=ckpt.logprob_min,
            logprob_count=ckpt.logprob_count,
            resumed=held,
            recomputed=ckpt.recomputed_tokens,
        )
        progress.add_text(ckpt.text, held)
        return progress

    @classmethod
    def restart(cls, ckpt: Checkpoint | None) -> Progress:
        """Start over, keeping only what earlier resumes prefilled again (billed once this attempt completes)."""
        return cls(recomputed=ckpt.recomputed_tokens if ckpt is not None else 0)

    @property
    def tokens(self) -> int:
        """Tokens of the answer so far."""
        return len(self.token_ids) + self.text_tokens

    def add(self, token_ids: list[int], logprobs: list[dict[int, Any]] | None) -> None:
        self.token_ids.extend(token_ids)
        for token, entry in zip(token_ids, logprobs or (), strict=False):
            self._logprob(entry[token].logprob)

    def add_text(self, text: str, tokens: int, logprobs: list[float] = []) -> None:  # noqa: B006 - never mutated
        self.pieces.append(Piece(text, tokens))
        self.text_tokens += tokens
        for value in logprobs:
            self._logprob(value)

    def _logprob(self, value: float) -> None:
        self.logprob_sum += value
        self.logprob_min = min(self.logprob_min, value) if self.logprob_count else value
        self.logprob_count += 1

    def checkpoint(self, text: str, worker_id: str) -> Checkpoint:
        return Checkpoint(
            token_ids=list(self.token_ids),
            text=text,
            logprob_sum=self.logprob_sum,
            logprob_min=self.logprob_min,
            logprob_count=self.logprob_count,
            worker_id=worker_id,
            recomputed_tokens=self.recomputed,
            text_tokens=self.text_tokens if self.pieces else None,
        )

    def summary(self) -> LogprobSummary | None:
        if not self.logprob_count:
            return None
        return LogprobSummary(
            mean=self.logprob_sum / self.logprob_count, min=self.logprob_min, count=self.logprob_count
        )


@dataclass(frozen=True)
class Generation:
    text: str
    finish_reason: str
    prompt_tokens: int
    cached_prompt_tokens: int
    engine_s: float
    completion_tokens: int
    """The whole answer's tokens, a resumed job's checkpointed ones included."""
