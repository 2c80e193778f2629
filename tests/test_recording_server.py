"""The recording server (issue 13) on a real HTTP port, driven by the official openai SDK and raw HTTP: recorded
answers by tier, streaming, continue_final_message, deterministic stand-ins of the stated length, refusals."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import statistics
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import msgspec
import openai
import pytest
import pytest_asyncio

from costwise.bench.recording import MAX_BODY_BYTES, Recordings, RecordingServer
from costwise.bench.recording_text import (
    STAND_IN_MEDIAN_TOKENS,
    STAND_IN_SIGMA,
    count_tokens,
    prompt_tokens,
    stand_in,
    tokens,
)
from costwise.catalog import Catalog, CatalogError, Provider, Tier, WorkerPool
from costwise.testing import free_port

SMALL, LARGE = "2 + 2 = 4. Adding two and two gives four.", "The answer is 4, since 2 + 2 = 4."
ASKED = "What is 2 + 2?"


def _catalog(large_model: str = "rec-large") -> Catalog:
    pool = WorkerPool(
        name="small-pool",
        model="rec-small",
        engine_url="http://127.0.0.1:1/v1",
        gpu_usd_per_hour=1.0,
        prefill_tokens_per_s=1000.0,
        decode_tokens_per_s=100.0,
    )
    big = Provider(
        name="big", model=large_model, base_url="http://127.0.0.1:1/v1", usd_per_m_input=1.0, usd_per_m_output=2.0
    )
    tiers = [Tier(name="small", backends=["small-pool"]), Tier(name="large", backends=["big"])]
    return Catalog(tiers=tiers, backends=[pool, big], baseline="big", aliases={"gpt-4": "large"})


@pytest.fixture
def workload(tmp_path: Path) -> Path:
    path = tmp_path / "workload.jsonl"
    lines = [
        msgspec.json.encode({"prompt": ASKED, "responses": {"small": SMALL, "large": LARGE}}),
        b"{not json",
        msgspec.json.encode(
            {
                "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital?"}],
                "responses": {"large": "Paris."},
            }
        ),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest_asyncio.fixture
async def served(workload: Path) -> AsyncIterator[tuple[RecordingServer, str]]:
    server = RecordingServer(Recordings.from_workload(workload), _catalog(), context_tokens=4096)
    async with server.serving() as base_url:
        yield server, base_url


def _client(base_url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)


def test_recordings_skip_a_bad_line_and_keep_the_rest(workload: Path) -> None:
    recordings = Recordings.from_workload(workload)
    assert [error.line for error in recordings.skipped] == [2]
    assert len(recordings) == 3


async def test_a_tiers_recording_is_the_answer_with_estimated_usage(served: tuple[RecordingServer, str]) -> None:
    server, base_url = served
    client = _client(base_url)
    small = await client.chat.completions.create(model="rec-small", messages=[{"role": "user", "content": ASKED}])
    # A tier name (and an alias) answers as that tier, too.
    large = await client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": ASKED}])
    assert small.choices[0].message.content == SMALL and large.choices[0].message.content == LARGE
    assert small.choices[0].finish_reason == "stop" and small.choices[0].logprobs is None
    assert small.usage is not None and small.usage.completion_tokens == count_tokens(SMALL)
    assert small.usage.prompt_tokens == prompt_tokens([("user", ASKED)], continuing=False) == 3 + 6 + 3
    assert server.counts["recorded"] == 2 and server.counts["stand_in"] == 0


async def test_a_stream_is_one_chunk_per_token_then_finish_usage_and_done(served: tuple[RecordingServer, str]) -> None:
    _, base_url = served
    stream = await _client(base_url).chat.completions.create(
        model="rec-large",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert pieces == tokens("Paris.") == ["Paris", "."]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 2 and chunks[-1].usage.prompt_tokens == 3 + 3 + 3 + 2 + 3
    async with httpx.AsyncClient() as http:  # and the raw stream ends with [DONE]
        body = {"model": "rec-large", "messages": [{"role": "user", "content": ASKED}], "stream": True}
        raw = await http.post(f"{base_url}/chat/completions", json=body)
    assert raw.headers["content-type"].startswith("text/event-stream") and raw.text.endswith("data: [DONE]\n\n")


async def test_continue_final_message_serves_the_rest_after_the_prefix(served: tuple[RecordingServer, str]) -> None:
    server, base_url = served
    head = "".join(tokens(SMALL)[:5])  # "2 + 2 = 4"
    messages = [{"role": "user", "content": ASKED}, {"role": "assistant", "content": head}]
    extra = {"continue_final_message": True, "add_generation_prompt": False}
    rest = await _client(base_url).chat.completions.create(model="rec-small", messages=messages, extra_body=extra)  # type: ignore[arg-type]
    assert head + (rest.choices[0].message.content or "") == SMALL
    assert rest.usage is not None and rest.usage.completion_tokens == count_tokens(SMALL) - 5
    # The prefix is prompt now: exactly its tokens more than the question alone.
    assert rest.usage.prompt_tokens == prompt_tokens([("user", ASKED)], continuing=False) + 5
    cut = await _client(base_url).chat.completions.create(
        model="rec-small",
        messages=messages,  # type: ignore[arg-type]
        extra_body=extra,
        max_tokens=3,
    )
    assert cut.choices[0].finish_reason == "length" and cut.usage is not None and cut.usage.completion_tokens == 3
    assert server.counts["continued"] == 2


async def test_a_prompt_without_recording_gets_a_deterministic_stand_in(served: tuple[RecordingServer, str]) -> None:
    server, base_url = served
    client, messages = _client(base_url), [{"role": "user", "content": "How do I activate my new card?"}]
    first = await client.chat.completions.create(model="rec-small", messages=messages, max_tokens=1024)  # type: ignore[arg-type]
    again = await client.chat.completions.create(model="rec-small", messages=messages, max_tokens=1024)  # type: ignore[arg-type]
    other = await client.chat.completions.create(model="rec-large", messages=messages, max_tokens=1024)  # type: ignore[arg-type]
    text = first.choices[0].message.content or ""
    assert text == again.choices[0].message.content and text != other.choices[0].message.content
    assert text.endswith(".") and "activate" in text and "sorry" not in text.lower()
    assert first.usage is not None and first.usage.completion_tokens == count_tokens(text)
    clipped = await client.chat.completions.create(model="rec-small", messages=messages, max_tokens=4)  # type: ignore[arg-type]
    assert clipped.choices[0].finish_reason == "length" and clipped.usage is not None
    assert clipped.usage.completion_tokens == 4 and text.startswith(clipped.choices[0].message.content or "-")
    assert server.counts["stand_in"] == 4


def test_stand_in_lengths_follow_the_stated_lognormal() -> None:
    lengths = [count_tokens(stand_in((("user", f"question number {i} about my card"),), "small")) for i in range(3000)]
    logs = [math.log(n) for n in lengths]
    assert abs(statistics.median(lengths) - STAND_IN_MEDIAN_TOKENS) <= 6
    assert abs(statistics.pstdev(logs) - STAND_IN_SIGMA) <= 0.05
    assert min(lengths) >= 8 and 0.002 < sum(n > 256 for n in lengths) / len(lengths) < 0.03


async def test_refusals_are_openai_style_errors(served: tuple[RecordingServer, str]) -> None:
    _, base_url = served
    url, ask = f"{base_url}/chat/completions", [{"role": "user", "content": ASKED}]
    async with httpx.AsyncClient() as http:
        unknown = await http.post(url, json={"model": "nobody", "messages": ask})
        oversized = await http.post(
            url, content=b"x" * (MAX_BODY_BYTES + 1), headers={"content-type": "application/json"}
        )
        malformed = await http.post(url, json={"model": "rec-small", "messages": "hi"})
        no_prefix = await http.post(url, json={"model": "rec-small", "messages": ask, "continue_final_message": True})
        too_long = await http.post(url, json={"model": "rec-small", "messages": ask, "max_tokens": 5000})
        models = await http.get(f"{base_url}/models")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    assert oversized.status_code == 413 and "larger than" in oversized.json()["error"]["message"]
    assert malformed.status_code == 400 and "messages" in malformed.json()["error"]["message"]
    assert no_prefix.status_code == 400 and "assistant" in no_prefix.json()["error"]["message"]
    assert too_long.status_code == 400 and "maximum context length is 4096" in too_long.json()["error"]["message"]
    assert {m["id"] for m in models.json()["data"]} == {"rec-small", "rec-large", "small", "large", "gpt-4"}


def test_a_model_in_two_tiers_is_refused_at_start(workload: Path) -> None:
    with pytest.raises(CatalogError, match="rec-small"):
        RecordingServer(Recordings.from_workload(workload), _catalog(large_model="rec-small"))


async def test_pacing_spreads_a_stream_over_its_tokens(workload: Path) -> None:
    server = RecordingServer(Recordings.from_workload(workload), _catalog(), tokens_per_s=100.0, ttft_s=0.1)
    async with server.serving() as base_url:
        loop = asyncio.get_running_loop()
        started = loop.time()
        stream = await _client(base_url).chat.completions.create(
            model="rec-small", messages=[{"role": "user", "content": ASKED}], stream=True
        )
        arrivals = [loop.time() - started async for chunk in stream if chunk.choices and chunk.choices[0].delta.content]
    n = count_tokens(SMALL)
    assert len(arrivals) == n and arrivals[0] >= 0.09 and arrivals[-1] >= 0.1 + (n - 1) / 100 - 0.01


def test_the_command_serves_until_sigterm(workload: Path, tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.json"
    catalog.write_bytes(msgspec.json.encode(_catalog()))
    port = free_port()
    code = "import sys; from pathlib import Path; from costwise.bench.recording import run; "
    code += f"sys.exit(run(Path({str(workload)!r}), Path({str(catalog)!r}), {port}, None))"
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True, env=os.environ)
    try:
        assert proc.stderr is not None and "recording server on" in proc.stderr.readline()
        listed = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5)
        assert listed.status_code == 200
        busy = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert busy.returncode == 2 and "in use" in busy.stderr  # the port is taken: one line, exit 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
