"""A streamed chat completion as Server-Sent Events in OpenAI's ``chat.completion.chunk`` format."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from opentelemetry.trace import get_current_span

from costwise.client import Delta
from costwise.contracts import ErrorCode, Result
from costwise.telemetry import record_result

from ._mapping import completion_id
from .errors import ApiError, from_error_info

__all__ = ["DONE", "Chunks", "closing", "events"]

log = logging.getLogger("costwise.gateway")

DONE = b"data: [DONE]\n\n"
_MARK = "\x00costwise-text\x00"  # stands for a text chunk's content while its frame is made; no text holds it
_MARK_JSON = json.dumps(_MARK).encode()


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


class Chunks:
    """The events of one streamed completion: the role first, then text, then the finish (and usage)."""

    def __init__(self, request_id: str, *, model: str, created: int, include_usage: bool) -> None:
        self.id = completion_id(request_id)
        self.model = model
        self._created = created
        self._include_usage = include_usage
        self._frame: tuple[str, bytes, bytes] | None = None

    def chunk(self, delta: dict[str, str], finish_reason: str | None = None, **extra: Any) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        body = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self.model,
            "choices": [choice],
        }
        if self._include_usage:  # as OpenAI does: null on every chunk, then one chunk with the usage
            body["usage"] = None
        return _event(body | extra)

    def text(self, content: str) -> bytes:
        """``chunk({"content": content})``, built per token: only the text is encoded each time, into the frame
        around it, which is made once per model (json.dumps of the whole chunk was a fifth of the relay's CPU)."""
        if self._frame is None or self._frame[0] != self.model:
            head, tail = self.chunk({"content": _MARK}).split(_MARK_JSON)
            self._frame = (self.model, head, tail)
        _, head, tail = self._frame
        return head + msgspec.json.encode(content) + tail

    def finish(self, result: Result) -> list[bytes]:
        assert result.output is not None
        info = {"request_id": result.request_id, "source": result.source, "cost_usd": result.cost_usd}
        last = [self.chunk({}, result.output.finish_reason, costwise=info | {"pool": result.pool})]
        if self._include_usage:
            usage = result.usage
            total = usage.prompt_tokens + usage.completion_tokens
            counts = {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens}
            head = {"id": self.id, "object": "chat.completion.chunk", "created": self._created, "model": self.model}
            last.append(_event(head | {"choices": [], "usage": counts | {"total_tokens": total}}))
        return last


def error_event(error: ApiError) -> bytes:
    """What a failure is once the stream has begun (the status line is sent): an ``error`` event, never a
    silent end. The openai SDKs raise it as ``APIError``; no ``[DONE]`` follows."""
    return _event(error.body())


async def events(deltas: AsyncIterator[Delta], chunks: Chunks, *, requested_model: str) -> AsyncIterator[bytes]:
    """The SSE body: ``deltas`` (from :class:`costwise.client.DeltaStream`) as chunks, ending in ``[DONE]``."""
    started = time.perf_counter()
    first = True
    yield chunks.chunk({"role": "assistant", "content": ""})
    try:
        async for delta in deltas:
            chunks.model = delta.model or chunks.model
            if delta.error is not None:
                if delta.result is not None:
                    record_result(delta.result, requested_model=requested_model)
                yield error_event(from_error_info(delta.error))
                return
            if delta.result is not None:
                record_result(delta.result, requested_model=requested_model)
                for event in chunks.finish(delta.result):
                    yield event
                yield DONE
                return
            if first:
                get_current_span().set_attribute("gen_ai.server.time_to_first_token", time.perf_counter() - started)
                first = False
            yield chunks.text(delta.text)
    except ApiError as exc:  # e.g. no result before the client's timeout
        yield error_event(exc)
    except Exception as exc:  # the status line is sent: an error event is all that is left to say
        log.warning("stream %s failed: %s", chunks.id, type(exc).__name__)
        yield error_event(ApiError(500, str(ErrorCode.INTERNAL), "the stream failed; poll the request by its id"))


async def closing(body: AsyncIterator[bytes], owned: contextlib.AsyncExitStack) -> AsyncIterator[bytes]:
    """``body``, closing ``owned`` (the request's result wait and delta subscription) however it ends: sent in
    full, or cancelled because the client went away."""
    async with owned:
        async for event in body:
            yield event
