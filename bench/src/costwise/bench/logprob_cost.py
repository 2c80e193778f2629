"""What the sampled tokens' logprobs cost the worker's process: the same batches with and without, alternated.

The worker asks vLLM for them only for an answer the router will judge (``Job.judged``, a cascade's small stage).
vLLM turns each one into Python objects in the worker's own process (its output handler), so they cost CPU per
token on the event loop that also pulls jobs and publishes deltas; the engine's own processes are not counted.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from costwise.contracts import ChatMessage, SamplingParams
from costwise.worker import Engine
from costwise.worker.engine import Progress

from ._harness import load_engine


async def _batch(engine: Engine, streams: int, max_tokens: int, logprobs: bool, tag: str) -> tuple[float, float, int]:
    """``streams`` requests at once: wall seconds, this process's CPU seconds, tokens generated."""
    params = SamplingParams(max_tokens=max_tokens)

    async def one(i: int) -> int:
        messages = [ChatMessage(role="user", content=f"Request {tag}-{i}: tell me a story about the sea.")]
        progress = Progress()
        await engine.generate(engine.prompt_ids(messages), params, progress, logprobs=logprobs)
        return progress.tokens

    wall, cpu = time.perf_counter(), time.process_time()
    tokens = sum(await asyncio.gather(*(one(i) for i in range(streams))))
    return time.perf_counter() - wall, time.process_time() - cpu, tokens


async def run(model: str, streams: int, max_tokens: int, rounds: int) -> dict[str, Any]:
    """``rounds`` batches each way, alternating which goes first; medians."""
    engine = await load_engine(model, streams)
    try:
        await _batch(engine, 2, 8, True, "warm")
        runs: dict[bool, list[tuple[float, float, int]]] = {True: [], False: []}
        for r in range(rounds):
            for logprobs in (True, False) if r % 2 else (False, True):
                runs[logprobs].append(await _batch(engine, streams, max_tokens, logprobs, f"r{r}-{logprobs}"))
    finally:
        engine.shutdown()
    rows = {
        "with_logprobs" if logprobs else "without": {
            "wall_p50_s": round(statistics.median(w for w, _, _ in got), 3),
            "cpu_p50_s": round(statistics.median(c for _, c, _ in got), 3),
            "cpu_per_token_us": round(statistics.median(c / n * 1e6 for _, c, n in got), 1),
        }
        for logprobs, got in runs.items()
    }
    return {
        "benchmark": "logprob_cost",
        "model": model,
        "streams": streams,
        "max_tokens": max_tokens,
        "rounds": rounds,
        **rows,
        "cpu_ratio": round(rows["without"]["cpu_p50_s"] / rows["with_logprobs"]["cpu_p50_s"], 3),
        "wall_ratio": round(rows["without"]["wall_p50_s"] / rows["with_logprobs"]["wall_p50_s"], 3),
    }
