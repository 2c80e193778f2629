"""vLLM in-process: one async engine, many concurrent generations (continuous batching happens inside)."""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from costwise.contracts import ChatMessage, Checkpoint, SamplingParams

from ._progress import Generation, Progress
from ._protocol import OnStep
from .settings import WorkerSettings

__all__ = ["Engine", "Generation", "Progress", "cpu_ranks"]

_CONTEXT_TOKENS = 6
"""Tokens decoded before a step's own, so its text starts as it does inside the whole answer."""


def cpu_ranks(ranks: int) -> str:
    """This process's CPUs split evenly among ``ranks`` tensor-parallel ranks, as vLLM's CPU backend takes them
    (``0,1|2,3``). Its own ``auto`` binding wants a NUMA node per rank and refuses the usual one-node machine."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < ranks:
        raise ValueError(f"tensor_parallel_size {ranks} needs at least {ranks} CPUs on vLLM's CPU backend")
    size = len(cpus) // ranks
    return "|".join(",".join(map(str, cpus[i * size : (i + 1) * size])) for i in range(ranks))


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
        if settings.tensor_parallel_size > 1:  # read by vLLM's CPU backend only
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", cpu_ranks(settings.tensor_parallel_size))
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        from costwise.models import resolve, run_dtype

        model = str(resolve(settings.model))
        name = settings.served_model_name or settings.model.removeprefix("builtin:")
        args = AsyncEngineArgs(
            model=model,
            served_model_name=[name],
            quantization=None if settings.quantization == "none" else settings.quantization,
            dtype=run_dtype(settings.model, settings.dtype),
            max_model_len=settings.max_model_len,
            max_num_seqs=settings.max_in_flight,
            tensor_parallel_size=settings.tensor_parallel_size,
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

    # The worker's engine protocol (``_protocol.GenerationEngine``): the prompt is its token ids.

    def prepare(self, messages: list[ChatMessage]) -> list[int]:
        return self.prompt_ids(messages)

    def prompt_tokens(self, prompt: list[int]) -> int:
        return len(prompt)

    def resume(self, checkpoint: Checkpoint | None) -> Progress:
        """A checkpoint's token ids continue; one with text only (an engine server's) starts over: its text
        would not tokenize back into what this model generated."""
        if checkpoint is None or checkpoint.token_ids or checkpoint.text_tokens is None:
            return Progress.from_checkpoint(checkpoint)
        return Progress.restart(checkpoint)

    def text(self, progress: Progress, tokens: int | None = None) -> str:
        return self.decode(progress.token_ids[:tokens])

    def tail(self, progress: Progress, tokens: int) -> str:
        if progress.step_text is not None and progress.step_text[0] == tokens:
            return progress.step_text[1]  # the step vLLM's detokenizer decoded: 10 µs a token less, per stream
        # Decoded from a few tokens earlier, twice: whether a token starts with a space (or finishes a character)
        # depends on the tokens before it. Decoding the whole answer on every step is quadratic: 0.86 ms a step
        # at 1,500 tokens, per stream.
        ids, lead = progress.token_ids, max(tokens - _CONTEXT_TOKENS, 0)
        before, after = self.decode(ids[lead:tokens]), self.decode(ids[lead:])
        if after.startswith(before):
            return after[len(before) :]
        return self.text(progress)[len(self.text(progress, tokens)) :]  # a tokenizer that decodes non-locally

    async def generate(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        progress: Progress,
        on_step: OnStep | None = None,
        *,
        logprobs: bool = True,
    ) -> Generation:
        """Generate into ``progress`` (which may already hold a checkpoint's tokens, then generation resumes).

        ``on_step`` is awaited after each engine step's tokens are added (a streamed job publishes them).
        ``logprobs``: the sampled tokens' logprobs (what the cascade's quality check reads) go into ``progress``."""
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
            logprobs=0 if logprobs else None,  # the sampled token's only: what the cascade's quality check reads
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
            progress.step_text = (progress.tokens, step.text)
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
            completion_tokens=len(progress.token_ids),  # a resumed job's checkpointed tokens are part of its answer
        )

    def shutdown(self) -> None:
        self.llm.shutdown()
