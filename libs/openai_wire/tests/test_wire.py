"""The OpenAI wire as costwise speaks it: request bodies, error bodies, usage and server-sent events."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
import pytest

from costwise.contracts import ChatMessage, SamplingParams, Usage
from costwise.openai_wire import (
    SSE_DONE,
    ChatChunk,
    ChatRequest,
    ChunkChoice,
    Delta,
    ErrorBody,
    PromptDetails,
    StreamCut,
    StreamError,
    TooLarge,
    WireUsage,
    chat_chunks,
    estimated_usage,
    finish_reason,
    read_limited,
    sse_data,
    sse_event,
)


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def _events(*parts: bytes, max_bytes: int = 1 << 20) -> list[bytes]:
    return [data async for data in sse_data(_chunks(*parts), max_bytes=max_bytes)]


def test_a_request_carries_the_jobs_sampling_and_nothing_unset() -> None:
    messages = [ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="Hi", name="ann")]
    req = ChatRequest.of("m", messages, SamplingParams(max_tokens=9, temperature=0.5), logprobs=True)
    assert msgspec.json.decode(msgspec.json.encode(req)) == {
        "model": "m",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi", "name": "ann"}],
        "max_tokens": 9,
        "temperature": 0.5,
        "top_p": 1.0,
        "logprobs": True,
    }
    seeded = ChatRequest.of("m", messages, SamplingParams(seed=3, stop=["\n"]), logprobs=False)
    body = msgspec.json.decode(msgspec.json.encode(seeded))
    assert body["seed"] == 3 and body["stop"] == ["\n"] and "logprobs" not in body and "stream" not in body


def test_a_request_decodes_with_the_continuation_extension_and_refuses_what_breaks_the_contract() -> None:
    raw = b'{"model":"m","messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}],'
    raw += b'"continue_final_message":true,"add_generation_prompt":false,"max_completion_tokens":5,"extra":1}'
    req = msgspec.json.decode(raw, type=ChatRequest)
    assert req.continue_final_message and req.add_generation_prompt is False and req.token_limit == 5
    with pytest.raises(msgspec.ValidationError, match="messages"):
        msgspec.json.decode(b'{"model":"m","messages":[]}', type=ChatRequest)


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b'{"error":{"message":"maximum context length is 2048","type":"BadRequestError"}}', "maximum context length"),
        (b'{"object":"error","message":"older vLLM says it here","code":400}', "older vLLM says it here"),
        (b"<html>Bad Gateway</html>", "<html>Bad Gateway</html>"),
    ],
)
def test_an_error_body_gives_its_message(body: bytes, said: str) -> None:
    assert said in ErrorBody.text_of(body)


def test_usage_clamps_what_a_server_may_get_wrong_and_finish_reasons_narrow() -> None:
    wire = WireUsage(prompt_tokens=10, completion_tokens=4, prompt_tokens_details=PromptDetails(cached_tokens=99))
    assert wire.usage() == Usage(prompt_tokens=10, completion_tokens=4, cached_prompt_tokens=10)
    assert [finish_reason(r) for r in ("stop", "length", "tool_calls", None)] == ["stop", "length", "abort", "abort"]


async def test_events_split_anywhere_in_the_byte_stream_come_out_whole() -> None:
    one = msgspec.json.encode(ChatChunk(model="m"))
    stream = sse_event(one) + b": a comment\r\nevent: x\r\ndata: a\r\ndata: b\r\n\r\n" + sse_event(SSE_DONE)
    pieces = [stream[i : i + 7] for i in range(0, len(stream), 7)]
    assert await _events(*pieces) == [one, b"a\nb", SSE_DONE]
    assert await _events(b"data: last, without the blank line") == [b"last, without the blank line"]


async def test_a_stream_or_body_past_its_limit_stops_being_read() -> None:
    with pytest.raises(TooLarge):
        await _events(b"data: " + b"x" * 100, b"\n\n", max_bytes=64)
    with pytest.raises(TooLarge):
        await read_limited(_chunks(b"x" * 40, b"x" * 40), 64)
    assert await read_limited(_chunks(b"x" * 40, b"y"), 64) == b"x" * 40 + b"y"


def _said(text: str | None = None, finish: str | None = None, usage: WireUsage | None = None) -> bytes:
    choices = [] if text is None and finish is None else [ChunkChoice(delta=Delta(content=text), finish_reason=finish)]
    return sse_event(msgspec.json.encode(ChatChunk(model="m", choices=choices, usage=usage)))


async def _read(*parts: bytes) -> list[ChatChunk]:
    return [chunk async for chunk in chat_chunks(_chunks(*parts), max_bytes=1 << 20)]


async def test_a_stream_is_whole_only_with_done_and_a_broken_one_raises() -> None:
    usage = WireUsage(prompt_tokens=3, completion_tokens=2)
    whole = await _read(_said("Pa"), _said("ris"), _said(finish="stop"), _said(usage=usage), sse_event(SSE_DONE))
    assert [c.choices[0].delta.content for c in whole[:2]] == ["Pa", "ris"] and whole[-1].usage == usage
    with pytest.raises(StreamCut):  # the connection ended cleanly, but before the answer said it was done
        await _read(_said("Pa"))
    for event in (b'{"error":{"message":"upstream 502","type":"server_error"}}', b'{"error":"overloaded"}'):
        with pytest.raises(StreamError, match=r"upstream 502|overloaded"):
            await _read(_said("Pa"), sse_event(event))


def test_usage_is_estimated_for_a_server_that_reports_none() -> None:
    messages = [ChatMessage(role="system", content="x" * 8), ChatMessage(role="user", content="y" * 5)]
    assert estimated_usage(messages, 7) == Usage(prompt_tokens=2 + 2 + 8, completion_tokens=7)
