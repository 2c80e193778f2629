"""``costwise-bench logprob-cost`` on the session's engine: a batch each way is timed and counts its tokens."""

from __future__ import annotations

from typing import Any

from costwise.bench.logprob_cost import _batch


async def test_a_batch_is_timed_with_and_without_logprobs(engine: Any) -> None:
    for logprobs in (True, False):
        wall, cpu, tokens = await _batch(engine, 2, 8, logprobs, f"test-{logprobs}")
        assert wall > 0 and cpu > 0 and 0 < tokens <= 16, (logprobs, wall, cpu, tokens)
