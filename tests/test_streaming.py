"""Streaming end to end: the official openai SDK with ``stream=True`` against the gateway on uvicorn, in front of
the cache, the router and a vLLM worker on the session's nats-server and engine; and ``Client.stream``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
import pytest_asyncio
from nats.aio.client import Client as Nats
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costwise.billing import BillingSettings, Ledger, open_ledger
from costwise.billing import build as build_billing
from costwise.cache import CacheSettings
from costwise.cache import build as build_cache
from costwise.catalog import default_catalog
from costwise.client import Client
from costwise.contracts import Result, StreamDelta, decode, subjects
from costwise.gateway import GatewaySettings
from costwise.gateway import build as build_gateway
from costwise.router import RouterSettings
from costwise.router import build as build_router
from costwise.worker import WorkerSettings
from costwise.worker import build as build_worker

BYPASS = {"costwise": {"cache": {"mode": "bypass"}}}
QUESTION: Any = [{"role": "user", "content": "Tell me a long story about a river."}]


@dataclass
class Stack:
    tenant: str
    sdk: openai.AsyncOpenAI
    ledger: Ledger


@contextlib.asynccontextmanager
async def _pipeline(
    nats_url: str, nc: Nats, pool: str, semantic_cache: Any, tracer_provider: Any, engine: Any | None, ledger: Ledger
) -> AsyncIterator[Stack]:
    """Cache, router, billing, the gateway serving on a free port and, given an ``engine``, one in-process worker."""
    # The router checks each request's deadline against its pool's speed: the tiny model is far faster than the
    # default's, and long answers must fit in the SDK's timeout.
    catalog = default_catalog(pool, decode_tokens_per_s=5000.0)
    services: list[Any] = [
        await build_cache(CacheSettings(nats_url=nats_url), semantic=semantic_cache),
        await build_router(RouterSettings(nats_url=nats_url), catalog=catalog),
        await build_billing(BillingSettings(nats_url=nats_url), nc=nc, catalog=catalog, ledger=ledger),
    ]
    if engine is not None:
        services.append(await build_worker(WorkerSettings(pool=pool, max_model_len=2048), nc=nc, engine=engine))
    gateway = await build_gateway(GatewaySettings(nats_url=nats_url), nc=nc, tracer_provider=tracer_provider)
    for service in services:
        await service.start()
    serving = await gateway.serve(port=0)
    key = await gateway.gateway.keys.create(pool)
    sdk = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{serving.port}/v1", api_key=key.secret, max_retries=0)
    try:
        yield Stack(pool, sdk.with_options(timeout=300), ledger)
    finally:
        await serving.stop()
        await gateway.close()
        for service in reversed(services):
            await (service.drain(0) if hasattr(service, "drain") else service.stop())


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    opened = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield opened
    opened.close()


@pytest_asyncio.fixture
async def stack(
    nats_url: str, nc: Nats, engine: Any, unique: str, semantic_cache: Any, tracer_provider: Any, ledger: Ledger
) -> AsyncIterator[Stack]:
    async with _pipeline(nats_url, nc, unique, semantic_cache, tracer_provider, engine, ledger) as running:
        yield running


async def _billed_tokens_out(ledger: Ledger, tenant: str, request_id: str) -> int:
    """The output tokens billing's ledger holds for ``request_id`` once its result line is in."""
    for _ in range(300):
        lines = [line for line in ledger.lines(tenant=tenant) if line.request_id == request_id]
        if any(line.kind == "result" for line in lines):
            return sum(line.tokens_out for line in lines if line.kind == "attempt")
        await asyncio.sleep(0.1)
    raise AssertionError(f"billing never recorded {request_id}'s result")


async def _stored(js: JetStreamContext, tenant: str, request_id: str) -> Result | None:
    try:
        msg = await js.get_last_msg(subjects.RESULTS.name, subjects.results(tenant, request_id))
    except NotFoundError:
        return None
    return decode(msg.data, Result)


async def test_a_stream_arrives_before_the_result_and_equals_the_greedy_answer(
    stack: Stack, js: JetStreamContext, span_exporter: InMemorySpanExporter
) -> None:
    whole = await stack.sdk.chat.completions.create(model="auto", messages=QUESTION, max_tokens=300, extra_body=BYPASS)  # type: ignore[arg-type]
    stream = await stack.sdk.chat.completions.create(
        model="auto",
        messages=QUESTION,  # type: ignore[arg-type]
        max_tokens=300,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=BYPASS,
    )
    chunks, stored_at_first_text = [], "unset"
    async for chunk in stream:
        if stored_at_first_text == "unset" and chunk.choices and chunk.choices[0].delta.content:
            stored_at_first_text = str(await _stored(js, stack.tenant, chunk.id.removeprefix("chatcmpl-")))
        chunks.append(chunk)
    assert stored_at_first_text == "None"  # the first tokens came while the answer was still being generated
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content and len(text) > 0
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 10  # token by token, not a lump
    result = await _stored(js, stack.tenant, chunks[0].id.removeprefix("chatcmpl-"))
    assert result is not None and result.source == "engine"
    usage = chunks[-1].usage  # what billing's ledger takes from the result
    assert chunks[-1].choices == [] and usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        result.usage.prompt_tokens,
        result.usage.completion_tokens,
    )
    assert usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]
    assert await _billed_tokens_out(stack.ledger, stack.tenant, result.request_id) == usage.completion_tokens
    served = [s for s in span_exporter.get_finished_spans() if s.name == "POST /v1/chat/completions"]
    assert any("gen_ai.server.time_to_first_token" in (s.attributes or {}) for s in served)


async def test_a_cache_hit_streams(stack: Stack) -> None:
    # Only answers that ended on their own are cached; the random tiny model stops at one of these soon enough.
    ask: dict[str, Any] = {"model": "auto", "messages": [{"role": "user", "content": "A colour?"}], "max_tokens": 64}
    ask["stop"] = ["a", "e", "o", " "]
    first = await stack.sdk.chat.completions.create(**ask)
    source = "engine"
    while source == "engine":  # the cache stores the answer when it consumes the result, a moment later
        await asyncio.sleep(0.2)
        again = await stack.sdk.chat.completions.create(**ask)
        source = (again.model_extra or {})["costwise"]["source"]
    streamed: Any = await stack.sdk.chat.completions.create(**ask, stream=True)
    chunks = [chunk async for chunk in streamed]
    last = [c for c in chunks if c.choices][-1]
    assert (last.model_extra or {})["costwise"]["source"] == "cache_exact"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == first.choices[0].message.content
    assert last.choices[0].finish_reason == "stop"


async def test_an_error_result_streams_an_error_event(stack: Stack) -> None:
    stream = await stack.sdk.chat.completions.create(
        model="no-such-model",
        messages=QUESTION,
        max_tokens=4,
        stream=True,  # type: ignore[arg-type]
    )
    with pytest.raises(openai.APIError) as caught:
        async for _ in stream:
            pass
    assert caught.value.code == "unknown_pool"


async def test_the_client_streams_pieces_then_the_result(stack: Stack, nc: Nats) -> None:
    deltas = [d async for d in Client(nc).stream(tenant=stack.tenant, prompt="Count to ten.", max_tokens=64)]
    *pieces, last = deltas
    assert last.result is not None and last.error is None and last.result.output is not None
    assert "".join(d.text for d in pieces) == last.result.output.text
    assert all(d.offset is not None for d in pieces) and len(pieces) > 1  # the engine's own pieces, as they came
    offsets = [d.offset for d in pieces]
    assert offsets == sorted(offsets) and offsets[0] == 0


async def test_the_cli_prints_the_stream(stack: Stack, nats_url: str, js: JetStreamContext) -> None:
    cli = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "costwise.cli",
        "--nats",
        nats_url,
        "publish",
        "Count to ten.",
        "--tenant",
        stack.tenant,
        "--request-id",
        "cli-stream",
        "--max-tokens",
        "48",
        "--stream",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await cli.communicate()
    result = await _stored(js, stack.tenant, "cli-stream")
    assert cli.returncode == 0 and result is not None and result.output is not None
    assert out.decode() == result.output.text + "\n"


def _spawn(env: dict[str, str], log: Any) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:  # its own process group: the engine-core child goes with it
        return subprocess.Popen(
            [sys.executable, "-m", "costwise.worker"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


# SIGTERM is the spot notice (the job is handed back with its checkpoint); SIGKILL a machine gone without one (the
# job is redelivered once its ack wait runs out, short here, and generated again from the start).
NOTICES = [pytest.param(signal.SIGTERM, id="sigterm"), pytest.param(signal.SIGKILL, id="sigkill")]
QUICK_REDELIVERY = {"ack_wait_s": 2.0, "heartbeat_s": 0.5}
# Answers asked for until the worker freezes in the middle of one. Frozen from this process, it can finish first:
# here, while vLLM generates, the kernel has let other processes wait seconds (a SIGCONT sent to the worker took 5 s
# to return), and the tiny model's whole answer takes 4-6 s.
ATTEMPTS = 4


@pytest.mark.timeout(900)
@pytest.mark.parametrize("notice", NOTICES)
async def test_a_stream_outlives_its_worker_process(
    notice: signal.Signals,
    nats_url: str,
    nc: Nats,
    js: JetStreamContext,
    engine: Any,
    tiny_model: str,
    unique: str,
    semantic_cache: Any,
    tracer_provider: Any,
    tmp_path: Any,
    ledger: Ledger,
) -> None:
    env = dict(os.environ)
    env.update(
        COSTWISE_WORKER_NATS_URL=nats_url,
        COSTWISE_WORKER_POOL=unique,
        COSTWISE_WORKER_MODEL=tiny_model,
        COSTWISE_WORKER_SERVED_MODEL_NAME="tiny-llama",
        COSTWISE_WORKER_GRACE_S="0",
        COSTWISE_WORKER_DTYPE="float32",  # as the session's engine, which resumes the job (conftest.TINY_DTYPE)
        **{f"COSTWISE_WORKER_{name.upper()}": str(value) for name, value in _quick(notice).items()},
    )
    log = tmp_path / "worker.log"
    proc = _spawn(env, log)
    try:
        async with _pipeline(nats_url, nc, unique, semantic_cache, tracer_provider, None, ledger) as running:
            while "serving pool" not in log.read_text(errors="replace"):  # the engine loads for tens of seconds
                assert proc.poll() is None, log.read_text(errors="replace")
                await asyncio.sleep(0.5)
            ask: dict[str, Any] = {"model": "auto", "messages": QUESTION, "max_tokens": 1500, "extra_body": BYPASS}

            async def preempt(freeze: _Freeze, chunks: list[Any]) -> tuple[int, Any] | None:
                """The notice, once the worker is frozen mid-answer; then the pool refills: a worker on the
                session's engine resumes or regenerates the job. Returns how many chunks the client had, and the
                refill; ``None`` when the worker froze only after its answer was done (it goes on)."""
                if await freeze.too_late():
                    return None
                had = len(chunks)
                await _stop(proc, notice)
                refill = await build_worker(
                    WorkerSettings(pool=unique, max_model_len=2048, **_quick(notice)), nc=nc, engine=engine
                )
                await refill.start()
                return had, refill

            for _ in range(ATTEMPTS):
                chunks: list[Any] = []
                freeze = await _Freeze(js, proc, tenant=unique, pool=unique, tokens=20).start(nc)
                preempting = asyncio.create_task(preempt(freeze, chunks))
                stream: Any = await running.sdk.chat.completions.create(
                    **ask, stream=True, stream_options={"include_usage": True}
                )
                async for chunk in stream:
                    chunks.append(chunk)
                if (preempted := await preempting) is not None:
                    break
            else:
                raise AssertionError(f"each of {ATTEMPTS} answers was done before the worker froze")
            had, worker = preempted
            whole = await running.sdk.chat.completions.create(**ask)  # the same question, uninterrupted
            await worker.drain(0)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    said = log.read_text(errors="replace")
    handed_back = re.search(r"handed back \S+ with (\d+) checkpointed tokens", said)
    ours = [line for line in said.splitlines() if "costwise." in line]
    assert (handed_back is not None) == (notice == signal.SIGTERM), ours
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    before = "".join(c.choices[0].delta.content or "" for c in chunks[:had] if c.choices)
    answer = whole.choices[0].message.content or ""
    stored = await _stored(js, unique, chunks[0].id.removeprefix("chatcmpl-"))
    assert stored is not None and stored.output is not None
    # One uninterrupted stream: no token twice, none missing (the stream is the stored answer), what was sent before
    # the notice is the uninterrupted run's.
    assert text == stored.output.text and answer.startswith(before)
    # SIGKILL: regenerated from the start, the prefix the client had dropped. SIGTERM: resumed, prompt and
    # checkpointed tokens prefilled, then greedy decoding; in float32 that is the uninterrupted computation.
    assert text == answer and stored.usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]
    assert handed_back is None or int(handed_back[1]) > 0
    assert chunks[-1].usage is not None  # the usage chunk is the result's, which billing takes
    assert chunks[-1].usage.completion_tokens == stored.usage.completion_tokens
    # Billed like any other request, preempted and resumed included: the tokens the client was streamed.
    assert await _billed_tokens_out(ledger, unique, stored.request_id) == chunks[-1].usage.completion_tokens


def _quick(notice: signal.Signals) -> dict[str, float]:
    return QUICK_REDELIVERY if notice == signal.SIGKILL else {}


class _Freeze:
    """SIGSTOPs the worker (and its engine process) as soon as its stream carries ``tokens`` tokens.

    The tiny model writes its whole answer in seconds, and a loaded machine can hold the client's chunks back
    that long: a notice sent when the client has read some chunks could land after the answer is done. Frozen, the
    worker waits for the notice wherever it got to; :meth:`too_late` tells whether that was past its answer."""

    def __init__(self, js: JetStreamContext, proc: subprocess.Popen[bytes], *, tenant: str, pool: str, tokens: int):
        self.js, self.proc, self.tenant, self.pool, self.tokens = js, proc, tenant, pool, tokens
        self.frozen = asyncio.Event()
        self.final = False  # the answer's last delta was seen
        self.answered = 0  # completions the pool had stored before

    async def start(self, nc: Nats) -> _Freeze:
        self.answered = await self._completions()
        self.sub = await nc.subscribe(subjects.deltas(self.tenant, "*"), cb=self._on_delta)
        return self

    async def _on_delta(self, msg: Any) -> None:
        delta = decode(msg.data, StreamDelta)
        self.final |= delta.final
        if not self.frozen.is_set() and delta.offset + delta.tokens >= self.tokens:
            os.killpg(self.proc.pid, signal.SIGSTOP)
            self.frozen.set()

    async def too_late(self) -> bool:
        """Once frozen: whether the answer was done by then (the worker is woken again)."""
        await self.frozen.wait()
        await asyncio.sleep(0.5)  # what the worker sent before it froze reaches the server and this process
        await self.sub.unsubscribe()
        if self.final or await self._completions() > self.answered:
            os.killpg(self.proc.pid, signal.SIGCONT)
            return True
        return False

    async def _completions(self) -> int:
        info = await self.js.stream_info(subjects.COMPLETIONS.name, subjects_filter=subjects.completions(self.pool))
        return info.state.messages


async def _stop(proc: subprocess.Popen[bytes], notice: signal.Signals) -> None:
    if notice == signal.SIGTERM:
        proc.send_signal(notice)  # the worker hands its job back and exits cleanly
        os.killpg(proc.pid, signal.SIGCONT)  # woken, it handles the notice before it can finish the answer
        assert await asyncio.to_thread(proc.wait, 60) == 0
    else:
        os.killpg(proc.pid, notice)  # the worker and its engine process, at once
        assert await asyncio.to_thread(proc.wait, 60) == -notice
