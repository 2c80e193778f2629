"""``stream: true`` through the official openai SDK: deltas become chunks (repeats dropped, a gap filled from the
result), a result without deltas (a cache hit) streams too, an error result is an error event; an async request's
answer followed as events (``GET /v1/requests/{id}/stream``); ``GET /v1/models``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import msgspec
import openai
import pytest
from nats.aio.client import Client as Nats
from nats.js import JetStreamContext
from openai.types.chat import ChatCompletionChunk

from costwise.contracts import ErrorCode, InferenceRequest, Result, StreamDelta, Usage, encode, subjects
from costwise.gateway._streaming import Chunks

from .conftest import failed, ok, responding

ANSWER = "The quick brown fox jumps over the lazy dog."
# (offset, tokens, text): the answer in pieces, with a repeat (a regenerated job) and a piece out of order.
PIECES = [
    (0, 2, "The quick"),
    (2, 1, " brown"),
    (0, 2, "The quick"),
    (3, 2, " fox jumps"),
    (5, 4, " over the lazy dog."),
]


_ASKED = {"model": "auto", "messages": [{"role": "user", "content": "a fox?"}]}
ChunkStream = openai.AsyncStream[ChatCompletionChunk]


def sdk(base_url: str, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0, timeout=20)


def streaming(nc: Nats, pieces: list[tuple[int, int, str]]) -> Callable[[InferenceRequest], Awaitable[Result]]:
    """A pipeline that streams ``pieces`` as a worker would, then answers :data:`ANSWER`."""

    async def behaviour(request: InferenceRequest) -> Result:
        assert request.stream
        for offset, tokens, text in pieces:
            delta = StreamDelta(
                request_id=request.request_id, tenant=request.tenant, offset=offset, text=text, tokens=tokens
            )
            await nc.publish(subjects.deltas(request.tenant, request.request_id), encode(delta))
        return msgspec.structs.replace(ok(request, ANSWER), usage=Usage(prompt_tokens=11, completion_tokens=9))

    return behaviour


async def _chunks(base_url: str, key: str, **kwargs: object) -> list[openai.types.chat.ChatCompletionChunk]:
    stream = await sdk(base_url, key).chat.completions.create(
        **_ASKED,  # type: ignore[arg-type]
        stream=True,
        **kwargs,  # type: ignore[call-overload]
    )
    return [chunk async for chunk in stream]


def _text(chunks: list[openai.types.chat.ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


async def test_deltas_become_chunks_repeats_dropped_and_usage_last(
    base_url: str, tenant_key: tuple[str, str], js: JetStreamContext, nc: Nats
) -> None:
    tenant, key = tenant_key
    async with responding(js, tenant, streaming(nc, PIECES)):
        chunks = await _chunks(base_url, key, stream_options={"include_usage": True})
    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert contents == ["The quick", " brown", " fox jumps", " over the lazy dog."]  # the engine's pieces, once
    assert _text(chunks) == ANSWER
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage = chunks[-1]
    assert usage.choices == [] and usage.usage is not None
    assert (usage.usage.prompt_tokens, usage.usage.completion_tokens, usage.usage.total_tokens) == (11, 9, 20)
    assert all(c.usage is None for c in chunks[:-1])


async def test_a_gap_takes_the_rest_from_the_result(
    base_url: str, tenant_key: tuple[str, str], js: JetStreamContext, nc: Nats
) -> None:
    tenant, key = tenant_key
    gapped = [PIECES[0], PIECES[4]]  # tokens 2..5 never arrived
    async with responding(js, tenant, streaming(nc, gapped)):
        chunks = await _chunks(base_url, key)
    assert _text(chunks) == ANSWER and chunks[1].choices[0].delta.content == "The quick"
    assert all(c.usage is None for c in chunks)  # not asked for


async def test_an_answer_without_deltas_streams_in_pieces(
    base_url: str, tenant_key: tuple[str, str], js: JetStreamContext
) -> None:
    tenant, key = tenant_key

    async def cache_hit(request: InferenceRequest) -> Result:
        return ok(request, ANSWER)

    async with responding(js, tenant, cache_hit):
        chunks = await _chunks(base_url, key)
    assert _text(chunks) == ANSWER
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1


async def test_an_error_result_is_an_error_event(
    base_url: str, tenant_key: tuple[str, str], js: JetStreamContext
) -> None:
    tenant, key = tenant_key

    async def broken(request: InferenceRequest) -> Result:
        return failed(request, ErrorCode.ENGINE_ERROR, "the engine fell over")

    async with responding(js, tenant, broken):
        with pytest.raises(openai.APIError, match="the engine fell over") as caught:
            await _chunks(base_url, key)
    assert caught.value.code == "engine_error"


def _follow(client: openai.AsyncOpenAI, request_id: str, **query: object) -> Awaitable[ChunkStream]:
    """``GET /v1/requests/{id}/stream`` through the SDK's own SSE reader (it returns once the headers are in)."""
    return client.get(
        f"/requests/{request_id}/stream",
        cast_to=ChatCompletionChunk,
        options={"params": query},
        stream=True,
        stream_cls=ChunkStream,
    )


async def test_an_async_request_submitted_to_stream_is_followed_live(
    base_url: str, tenant_key: tuple[str, str], js: JetStreamContext, nc: Nats
) -> None:
    tenant, key = tenant_key
    client = sdk(base_url, key)
    following = asyncio.Event()
    pieces = streaming(nc, PIECES)

    async def once_followed(request: InferenceRequest) -> Result:
        await following.wait()  # deltas are not kept: the pipeline starts once the reader is subscribed
        return await pieces(request)

    body = {"model": "auto", "messages": [{"role": "user", "content": "a fox?"}], "stream": True}
    async with responding(js, tenant, once_followed):
        accepted = await client.post("/requests", body=body, cast_to=dict[str, str])
        stream = await _follow(client, accepted["id"], include_usage=True)
        following.set()
        chunks = [chunk async for chunk in stream]
    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert contents == ["The quick", " brown", " fox jumps", " over the lazy dog."]  # live pieces, not the result's
    assert _text(chunks) == ANSWER and chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 20


async def test_a_finished_request_streams_its_stored_answer_and_an_unknown_one_is_404(
    base_url: str, tenant_key: tuple[str, str], js: JetStreamContext
) -> None:
    tenant, key = tenant_key
    client = sdk(base_url, key)

    async def answered(request: InferenceRequest) -> Result:
        return ok(request, ANSWER)

    async with responding(js, tenant, answered):
        accepted = await client.post("/requests", body=_ASKED, cast_to=dict[str, str])
        for _ in range(100):
            status = await client.get(f"/requests/{accepted['id']}", cast_to=dict[str, object])
            if status["status"] == "completed":
                break
            await asyncio.sleep(0.05)
    chunks = [chunk async for chunk in await _follow(client, accepted["id"])]
    assert _text(chunks) == ANSWER and len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    assert all(c.usage is None for c in chunks) and chunks[-1].choices[0].finish_reason == "stop"
    with pytest.raises(openai.NotFoundError) as caught:
        await _follow(client, "never-queued")
    assert caught.value.code == "request_not_found"


async def test_models_lists_auto_tiers_and_models(base_url: str, tenant_key: tuple[str, str]) -> None:
    _, key = tenant_key
    models = [m async for m in sdk(base_url, key).models.list()]
    ids = [m.id for m in models]
    assert ids[0] == "auto" and "small" in ids and len(ids) == len(set(ids)) >= 3
    assert all(m.object == "model" for m in models)


@pytest.mark.parametrize("include_usage", [False, True])
def test_a_text_chunk_built_in_its_frame_is_the_chunk_the_whole_encoding_gives(include_usage: bool) -> None:
    chunks = Chunks("r1", model="tiny", created=123, include_usage=include_usage)
    for text in ["hello", ' wörld ✓ "q" \\ \n', "", "\x00", "\u2028"]:
        assert json.loads(chunks.text(text)[6:]) == json.loads(chunks.chunk({"content": text})[6:]), text
    chunks.model = "the served model"  # the first delta names it: the frame follows
    assert json.loads(chunks.text("x")[6:]) == json.loads(chunks.chunk({"content": "x"})[6:])
