"""What the worker needs of an engine: vLLM in-process (``engine.Engine``) and an OpenAI-compatible engine server
(``ServerEngine``) both provide it, so the handler never asks which one it has."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from costwise.contracts import ChatMessage, Checkpoint, ErrorCode, SamplingParams

from ._progress import Generation, Progress

__all__ = ["EngineRefused", "EngineUnavailable", "GenerationEngine", "OnStep"]

OnStep = Callable[[Progress], Awaitable[None]]


class EngineRefused(Exception):
    """The engine will never generate this job (a server answered 400: prompt too long, a bad parameter): the
    caller gets ``code`` as a typed error, as for an admission refusal."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


class EngineUnavailable(Exception):
    """The engine could not be reached (refused connections, 5xx, timeouts) after its retries: the job goes back
    to the queue for another worker or a later try."""


class GenerationEngine(Protocol):
    """One engine a worker feeds; many generations run in it at once."""

    @property
    def model_name(self) -> str: ...

    @property
    def max_model_len(self) -> int | None:
        """Prompt + max_tokens it takes; ``None``: it checks that itself (an engine server answers 400)."""
        ...

    def prepare(self, messages: list[ChatMessage], /) -> Any:
        """The prompt in the engine's own form (vLLM: token ids), made once per job."""
        ...

    def prompt_tokens(self, prompt: Any, /) -> int | None:
        """Tokens of a prepared prompt, for admission; ``None`` when only the engine can count them."""
        ...

    def resume(self, checkpoint: Checkpoint | None, /) -> Progress:
        """Where a job starts: from its checkpoint when this engine can continue it, else from nothing."""
        ...

    def text(self, progress: Progress, tokens: int | None = None, /) -> str:
        """The answer's text over its first ``tokens`` tokens (all of them by default)."""
        ...

    def tail(self, progress: Progress, tokens: int, /) -> str:
        """What the answer's tokens past its first ``tokens`` add to ``text(progress, tokens)``. Called once per
        step of a streamed job, so its cost must not grow with the answer's length."""
        ...

    async def generate(
        self,
        prompt: Any,
        params: SamplingParams,
        progress: Progress,
        /,
        on_step: OnStep | None = None,
        *,
        logprobs: bool = True,
    ) -> Generation:
        """Generate into ``progress`` (which may hold a checkpoint's answer: then the rest is generated), awaiting
        ``on_step`` after each step's tokens are added. ``logprobs``: whether the sampled tokens' logprobs are
        wanted (an engine that needs them anyway may still fetch them). Raises :class:`EngineRefused` or
        :class:`EngineUnavailable`; cancelled, it stops at once and ``progress`` holds what was produced."""
        ...
