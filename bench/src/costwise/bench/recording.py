"""The recording server: an OpenAI-compatible chat-completions server that answers each prompt with what a tier's
model answered when it was recorded (a workload file's ``responses``), so a replay's quality is the real models'.

A request's ``model`` picks the tier through the catalog (a backend's model → its tier), so one server can stand
behind every pool (``engine_url``) and provider (``base_url``) of a replay catalog. A prompt without a recording
(FAQ traffic, MMLU lines) gets a deterministic stand-in answer; usage is a stated token estimate
(``recording_text``); recordings carry no logprobs, so none are sent. Streaming (SSE chunks, a usage chunk with
``stream_options.include_usage``, ``[DONE]``), vLLM's ``continue_final_message`` (the rest of the answer after an
assistant prefix), optional pacing (``ttft_s``, ``tokens_per_s`` per stream) so a chaos replay has jobs in flight.

In process::

    recordings = Recordings.from_workload(path)
    server = RecordingServer(recordings, catalog, tokens_per_s=None, ttft_s=0.0)
    async with server.serving(host="127.0.0.1", port=port) as base_url:  # ends with /v1
        ...

or ``costwise-bench recording-server`` (:func:`run`), until SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from costwise.bench.recording_answer import BadRequest, Recordings, Reply, answer, model_tiers
from costwise.catalog import Catalog, CatalogError, load_catalog
from costwise.openai_wire import (
    SSE_DONE,
    ChatChunk,
    ChatCompletion,
    ChatRequest,
    Choice,
    ChunkChoice,
    Delta,
    ErrorBody,
    ErrorDetail,
    Message,
    WireUsage,
    sse_event,
)

__all__ = ["MAX_BODY_BYTES", "RecordingServer", "Recordings", "run"]

MAX_BODY_BYTES = 1 << 20
"""Largest request body read (a chat at the contract's limits fits; 413 beyond)."""
_JSON = "application/json"


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: whoever runs the server owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class RecordingServer:
    """Answers ``POST /v1/chat/completions`` from ``recordings``; ``GET /v1/models`` lists what it answers as.

    ``counts`` tallies answers: ``recorded``, ``stand_in``, ``continued``. ``context_tokens`` makes it refuse
    (400, as vLLM words it) a prompt + max_tokens beyond that window; ``None``: no window.
    """

    def __init__(
        self,
        recordings: Recordings,
        catalog: Catalog,
        *,
        tokens_per_s: float | None = None,
        ttft_s: float = 0.0,
        context_tokens: int | None = None,
    ) -> None:
        if (tokens_per_s is not None and tokens_per_s <= 0) or ttft_s < 0:
            raise ValueError(f"pacing needs tokens_per_s > 0 and ttft_s >= 0 (got {tokens_per_s}, {ttft_s})")
        self.recordings = recordings
        self.tiers = model_tiers(catalog)
        self.tokens_per_s, self.ttft_s, self.context_tokens = tokens_per_s, ttft_s, context_tokens
        self.counts: Counter[str] = Counter()
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
            ]
        )

    @contextlib.asynccontextmanager
    async def serving(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        """Serve on ``host:port`` (0: a free port) while inside; yields the base URL (``http://host:port/v1``).
        Binding fails at once with ``OSError`` (a port in use)."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family)
        config = uvicorn.Config(
            self.app, log_level="warning", http="h11", lifespan="off", access_log=False, server_header=False
        )
        config.timeout_graceful_shutdown = 1  # paced streams still open must not hold the exit
        server = _Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            while not server.started:
                if task.done():
                    await task
                    raise RuntimeError(f"the recording server did not start on {host}:{port}")
                await asyncio.sleep(0.01)
            yield f"http://{host}:{sock.getsockname()[1]}/v1"
        finally:
            server.should_exit = True
            await task
            sock.close()

    async def _models(self, request: Request) -> Response:
        models = [{"id": name, "object": "model", "owned_by": "costwise-recording"} for name in sorted(self.tiers)]
        return JSONResponse({"object": "list", "data": models})

    async def _chat(self, request: Request) -> Response:
        try:
            req = await _read(request)
            reply = answer(req, self.recordings, self.tiers, context_tokens=self.context_tokens, seen=self.counts)
        except BadRequest as bad:
            detail = ErrorDetail(message=bad.message, type="invalid_request_error", code=bad.code)
            return Response(msgspec.json.encode(ErrorBody(error=detail)), bad.status, media_type=_JSON)
        chat_id, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if req.stream:
            events = self._events(req, reply, chat_id, created)
            return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        await asyncio.sleep(self._due(len(reply.tokens)))
        message = Message(role="assistant", content="".join(reply.tokens))
        done = ChatCompletion(
            id=chat_id,
            created=created,
            model=req.model,
            choices=[Choice(message=message, finish_reason=reply.finish_reason)],
            usage=_usage(reply),
        )
        return Response(msgspec.json.encode(done), media_type=_JSON)

    async def _events(self, req: ChatRequest, reply: Reply, chat_id: str, created: int) -> AsyncIterator[bytes]:
        def chunk(choices: list[ChunkChoice], usage: WireUsage | None = None) -> bytes:
            return sse_event(
                msgspec.json.encode(
                    ChatChunk(id=chat_id, created=created, model=req.model, choices=choices, usage=usage)
                )
            )

        started = asyncio.get_running_loop().time()
        yield chunk([ChunkChoice(delta=Delta(role="assistant", content=""))])
        for i, token in enumerate(reply.tokens):
            await asyncio.sleep(started + self._due(i) - asyncio.get_running_loop().time())
            yield chunk([ChunkChoice(delta=Delta(content=token))])
        yield chunk([ChunkChoice(finish_reason=reply.finish_reason)])
        if req.stream_options is not None and req.stream_options.include_usage:
            yield chunk([], _usage(reply))
        yield sse_event(SSE_DONE)

    def _due(self, tokens: int) -> float:
        """Seconds from the request until its ``tokens``-th token is out (0 without pacing)."""
        return self.ttft_s + (tokens / self.tokens_per_s if self.tokens_per_s else 0.0)


async def _read(request: Request) -> ChatRequest:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BadRequest(413, f"request body larger than {MAX_BODY_BYTES} bytes")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > MAX_BODY_BYTES:
            raise BadRequest(413, f"request body larger than {MAX_BODY_BYTES} bytes")
    try:
        return msgspec.json.decode(bytes(body), type=ChatRequest)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BadRequest(400, f"invalid chat-completions request: {exc}") from None


def _usage(reply: Reply) -> WireUsage:
    completion = len(reply.tokens)
    return WireUsage(
        prompt_tokens=reply.prompt_tokens, completion_tokens=completion, total_tokens=reply.prompt_tokens + completion
    )


def run(
    workload: Path,
    catalog: Path,
    port: int,
    tokens_per_s: float | None,
    *,
    ttft_s: float = 0.0,
    host: str = "127.0.0.1",
) -> int:
    """``costwise-bench recording-server``: serve until SIGINT/SIGTERM (exit 0); a bad workload path, catalog or
    pacing, or a port in use, is one line on stderr and exit 2."""
    try:
        recordings = Recordings.from_workload(workload)
        server = RecordingServer(recordings, load_catalog(catalog), tokens_per_s=tokens_per_s, ttft_s=ttft_s)
        return asyncio.run(_serve_until_signalled(server, host, port))
    except (OSError, CatalogError, ValueError) as exc:
        print(f"costwise-bench recording-server: {exc}", file=sys.stderr, flush=True)
        return 2


async def _serve_until_signalled(server: RecordingServer, host: str, port: int) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server.serving(host, port) as base_url:
        skipped = len(server.recordings.skipped)
        print(
            f"recording server on {base_url}: {len(server.recordings)} recorded answers"
            f" ({skipped} bad workload lines skipped); models: {', '.join(sorted(server.tiers))}",
            file=sys.stderr,
            flush=True,
        )
        await stop.wait()
    return 0
