"""vLLM in-process: one async engine, many concurrent generations (continuous batching happens inside)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from costwise.contracts import ChatMessage, Checkpoint, LogprobSummary, SamplingParams

from .settings import WorkerSettings

__all__ = ["Engine", "Generation", "Progress"]


@dataclass
class Progress:
    """What a running generation has produced so far; a checkpoint is taken from it on preemption."""

    token_ids: list[int] = field(default_factory=list)
    logprob_sum: float = 0.0
    logprob_min: float = 0.0
    logprob_count: int = 0
    resumed: int = 0
    first_token_s: float | None = None
    recomputed: int = 0
    """Prompt tokens prefilled again for this job because it resumed: earlier resumes' (from the checkpoint)
    plus this run's prompt + checkpointed tokens once its prefill is done. Billed on top of the usage."""

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint | None) -> Progress:
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

    def add(self, token_ids: list[int], logprobs: list[dict[int, Any]] | None) -> None:
        self.token_ids.extend(token_ids)
        for token, entry in zip(token_ids, logprobs or (), strict=False):
            value = entry[token].logprob
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


class Engine:
    """A vLLM ``AsyncLLM`` plus its tokenizer. Build it once per process with :meth:`load`."""

    def __init__(self, llm: Any, tokenizer: Any, model_name: str, max_model_len: int) -> None:
        self.llm = llm
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.max_model_len = max_model_len

    @classmethod
    def load(cls, settings: WorkerSettings) -> Engine:
        """Load the pool's model into vLLM (tens of seconds on CPU; the model is prepared first if builtin)."""
        # AsyncLLM always runs its engine core in a child process (VLLM_ENABLE_V1_MULTIPROCESSING only
        # affects the sync engine). Whoever SIGKILLs a worker must kill its process group, as losing
        # the machine would; otherwise the engine core is orphaned.
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(settings.kv_cache_gib))
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        from costwise.models import resolve

        model = str(resolve(settings.model))
        name = settings.served_model_name or settings.model.removeprefix("builtin:")
        args = AsyncEngineArgs(
            model=model,
            served_model_name=[name],
            quantization=None if settings.quantization == "none" else settings.quantization,
            dtype=settings.dtype,
            max_model_len=settings.max_model_len,
            max_num_seqs=settings.max_in_flight,
            enable_prefix_caching=True,
            enforce_eager=settings.enforce_eager,
            disable_log_stats=True,
        )
        llm = AsyncLLM.from_engine_args(args)
        from transformers import AutoTokenizer

        return cls(llm, AutoTokenizer.from_pretrained(model), name, settings.max_model_len)

    async def warm_up(self) -> None:
        """One tiny generation: vLLM compiles a logprob helper on first use (seconds on CPU), not on a job."""
        await self.generate(
            self.prompt_ids([ChatMessage(role="user", content="hi")]), SamplingParams(max_tokens=2), Progress()
        )

    def prompt_ids(self, messages: list[ChatMessage]) -> list[int]:
        chat = [{"role": m.role, "content": m.content} for m in messages]
        # Render then encode: apply_chat_template(tokenize=True) changed its return type across
        # transformers releases; the template already holds every special token.
        text = self.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, token_ids: list[int]) -> str:
        return str(self.tokenizer.decode(token_ids, skip_special_tokens=True))

    async def generate(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        progress: Progress,
        on_step: Callable[[Progress], Awaitable[None]] | None = None,
    ) -> Generation:
        """Generate into ``progress`` (which may already hold a checkpoint's tokens, then generation resumes).

        ``on_step`` is awaited after each engine step's tokens are added (a streamed job publishes them)."""
        from vllm import SamplingParams as VllmParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        started = time.perf_counter()
        remaining = params.max_tokens - len(progress.token_ids)
        if remaining <= 0:
            return self._generation(progress, "length", len(prompt_ids), 0, started)
        vparams = VllmParams(
            max_tokens=remaining,
            temperature=params.temperature,
            top_p=params.top_p,
            seed=params.seed,
            stop=list(params.stop) or None,
            logprobs=0,  # the sampled token's logprob only: what the cascade's quality check needs
            output_kind=RequestOutputKind.DELTA,
        )
        # Resume = the original prompt plus the checkpointed tokens; greedy decoding continues identically.
        prompt = TokensPrompt(prompt_token_ids=prompt_ids + progress.token_ids)
        refilled = len(prompt_ids) + len(progress.token_ids) if progress.token_ids else 0  # else it is usage
        finish, cached = "abort", 0
        async for out in self.llm.generate(prompt, vparams, request_id=uuid.uuid4().hex):
            step = out.outputs[0]
            if step.token_ids and refilled:  # the first new token: the prefill is done, count it once
                progress.recomputed, refilled = progress.recomputed + refilled, 0
            if step.token_ids and progress.first_token_s is None:
                progress.first_token_s = time.perf_counter() - started
            progress.add(list(step.token_ids), step.logprobs)
            if on_step is not None:
                await on_step(progress)
            if out.finished:
                finish = step.finish_reason or "stop"
                cached = out.num_cached_tokens or 0
        return self._generation(progress, finish, len(prompt_ids), cached, started)

    def _generation(self, progress: Progress, finish: str, prompt: int, cached: int, started: float) -> Generation:
        return Generation(
            text=self.decode(progress.token_ids),
            finish_reason=finish,
            prompt_tokens=prompt,
            cached_prompt_tokens=min(cached, prompt),
            engine_s=time.perf_counter() - started,
        )

    def shutdown(self) -> None:
        self.llm.shutdown()
