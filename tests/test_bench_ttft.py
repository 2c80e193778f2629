"""``costwise-bench ttft`` on the session's engine: both paths stream text, and the row says how they compare."""

from __future__ import annotations

from typing import Any

from costwise.bench.ttft import POOL, SPREAD_TURNS, Options, measure
from costwise.contracts import subjects


async def test_both_paths_are_timed_from_the_text_they_stream(engine: Any) -> None:
    (row,) = await measure(engine, Options((2,), rounds=2, max_tokens=24))
    assert (row["streams"], row["requests_per_path"]) == (2, 4)
    for path in ("direct", "gateway"):
        timed = row[path]
        assert 0 < timed["ttft_p50_ms"] <= timed["ttft_p99_ms"], path
        assert timed["gap_p50_ms"] > 0 and timed["gap_mean_ms"] > 0, path  # more than one piece of text each
        # Each request reaches the engine, and gets its first step there, before its first text reaches the client.
        assert 0 <= timed["reached_engine_p50_ms"] < timed["ttft_p50_ms"], path
        assert 0 < timed["engine_ttft_p50_ms"] <= timed["ttft_p50_ms"], path
    assert row["direct"]["reached_engine_p50_ms"] < row["gateway"]["reached_engine_p50_ms"]  # the queue's hops
    assert row["added_ttft_p50_ms"] == round(row["gateway"]["ttft_p50_ms"] - row["direct"]["ttft_p50_ms"], 2)
    assert row["gap_mean_ratio"] == round(row["gateway"]["gap_mean_ms"] / row["direct"]["gap_mean_ms"], 3)


async def test_spread_chats_ask_their_questions_in_turn_on_both_paths(engine: Any) -> None:
    (row,) = await measure(engine, Options((3,), rounds=1, max_tokens=8, spread_s=0.1))
    assert row["requests_per_path"] == 3 * SPREAD_TURNS
    for path in ("direct", "gateway"):
        assert 0 <= row[path]["reached_engine_p50_ms"] < row[path]["ttft_p50_ms"], path


async def test_hops_say_when_each_consumer_took_the_queued_requests(engine: Any) -> None:
    (row,) = await measure(engine, Options((2,), rounds=1, max_tokens=8, with_cache=True, hops=True))
    hops = row["hops_p50_ms"]
    order = [subjects.CACHE_REQUESTS.durable, subjects.ROUTER_ROUTE.durable, subjects.worker_jobs(POOL).durable]
    assert list(hops) == order  # in the order a request meets them
    began = [hop["began_ms"] for hop in hops.values()]
    assert 0 <= began[0] < began[1] < began[2], hops
    assert all(hop["took_ms"] > 0 for hop in hops.values())
    assert hops[order[2]]["took_ms"] > hops[order[1]]["took_ms"]  # the worker keeps it to the last token
