"""Tensor parallelism: one engine over two ranks (vLLM's CPU backend here, one core per rank; GPUs in production)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import msgspec
import pytest

from costwise.contracts import ChatMessage, SamplingParams
from costwise.worker import Engine, WorkerSettings
from costwise.worker.engine import Progress, cpu_ranks

BIND = "VLLM_CPU_OMP_THREADS_BIND"


async def _answers(engine: Any, prompts: list[str]) -> list[list[int]]:
    answers = []
    for prompt in prompts:
        progress = Progress()
        ids = engine.prompt_ids([ChatMessage(role="user", content=prompt)])
        await engine.generate(ids, SamplingParams(max_tokens=48), progress)
        answers.append(progress.token_ids)
    return answers


async def test_an_engine_over_two_ranks_answers_what_one_rank_does(engine: Any, tiny_model: str) -> None:
    """Greedy, float32: the sharded matmuls and their all-reduce give the single engine's tokens (measured before
    this test: 5 prompts x 64 tokens identical)."""
    prompts = ["hello there", "what is the capital of France?", "write a poem about the sea"]
    settings = WorkerSettings(
        model=tiny_model, served_model_name="tiny-llama", max_model_len=2048, dtype="float32", tensor_parallel_size=2
    )
    bound = os.environ.get(BIND)  # Engine.load sets a default for the engine's processes; keep it out of others
    try:
        sharded = await asyncio.to_thread(Engine.load, settings)
    finally:
        if bound is None:
            os.environ.pop(BIND, None)
    try:
        assert sharded.llm.vllm_config.parallel_config.tensor_parallel_size == 2
        assert await _answers(sharded, prompts) == await _answers(engine, prompts)
    finally:
        sharded.shutdown()


def test_cpu_ranks_split_this_process_cpus_evenly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {3, 0, 2, 1, 4})
    assert cpu_ranks(1) == "0,1,2,3,4"
    assert cpu_ranks(2) == "0,1|2,3"  # a CPU left over stays unbound rather than making the ranks uneven
    with pytest.raises(ValueError, match="needs at least 6 CPUs"):
        cpu_ranks(6)


def test_tensor_parallel_size_is_checked_at_load() -> None:
    for bad in (0, 65):
        with pytest.raises(msgspec.ValidationError, match="tensor_parallel_size"):
            msgspec.convert({"tensor_parallel_size": bad}, WorkerSettings)
