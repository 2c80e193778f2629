"""A local HTTP server streaming OpenAI chat-completion chunks (server-sent events): the paid provider in the
streaming tests, with the ways a real one breaks mid-answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Literal

import msgspec
import pytest_asyncio
from aiohttp import web

from costwise.catalog import Catalog, Provider, Tier
from costwise.openai_wire import (
    SSE_DONE,
    ChatChunk,
    ChatCompletion,
    Choice,
    ChunkChoice,
    Delta,
    Logprobs,
    Message,
    TokenLogprob,
    WireUsage,
    sse_event,
)
from costwise.testing import FakeOpenAI

Plan = Literal["ok", "drop", "error_event", "no_usage"]
ANSWER = ["The", " capital", " of", " France", " is", " Paris."]


class StreamingProvider(FakeOpenAI):
    """``POST /v1/chat/completions``: a streamed request gets ``words`` a word (one token) per chunk, a finish
    chunk, a usage chunk and ``[DONE]``; a non-streamed one gets it whole.

    Each streamed call follows the next entry of ``plans`` (then ``default``): ``ok``; ``drop`` (the TCP connection
    is cut after ``cut_after`` words); ``error_event`` (an error event after them, as a provider whose upstream
    failed with a 5xx after the 200, then a clean end); ``no_usage`` (no usage chunk). ``answers`` likewise gives
    each call's words (then ``words``). ``hold``, when set, keeps the finish chunk back until it is set.
    """

    def __init__(self) -> None:
        super().__init__()  # its server lifecycle; the chat handler is this class's own
        self.words = list(ANSWER)
        self.prompt_tokens = 11
        """What it bills for a prompt: deliberately not what costwise would estimate."""
        self.answers: list[list[str]] = []
        self.plans: list[Plan] = []
        self.default: Plan = "ok"
        self.cut_after = 3
        self.hold: asyncio.Event | None = None
        self.bodies: list[dict[str, Any]] = []

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        words = self.answers.pop(0) if self.answers else self.words
        if not body.get("stream"):
            return web.json_response(msgspec.to_builtins(self._whole(body["model"], words)))
        plan = self.plans.pop(0) if self.plans else self.default
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        for i, word in enumerate(words):
            if plan in ("drop", "error_event") and i == self.cut_after:
                return await self._break(request, resp, plan)
            await resp.write(_event(body["model"], [_said(word)]))
        if self.hold is not None:
            await self.hold.wait()
        await resp.write(_event(body["model"], [ChunkChoice(finish_reason="stop")]))
        if plan != "no_usage" and (body.get("stream_options") or {}).get("include_usage"):
            await resp.write(_event(body["model"], [], self._usage(words)))
        await resp.write(sse_event(SSE_DONE))
        return resp

    def _usage(self, words: list[str]) -> WireUsage:
        return WireUsage(prompt_tokens=self.prompt_tokens, completion_tokens=len(words))

    def _whole(self, model: str, words: list[str]) -> ChatCompletion:
        message = Message(role="assistant", content="".join(words))
        choice = Choice(message=message, finish_reason="stop")
        return ChatCompletion(model=model, choices=[choice], usage=self._usage(words))

    @staticmethod
    async def _break(request: web.Request, resp: web.StreamResponse, plan: Plan) -> web.StreamResponse:
        if plan == "error_event":
            await resp.write(sse_event(b'{"error":{"message":"upstream returned 502","type":"server_error"}}'))
            return resp
        assert request.transport is not None
        request.transport.close()  # no terminating chunk: the client sees the body cut short
        return resp


def _said(word: str) -> ChunkChoice:
    return ChunkChoice(delta=Delta(content=word), logprobs=Logprobs(content=[TokenLogprob(logprob=-0.1)]))


def _event(model: str, choices: list[ChunkChoice], usage: WireUsage | None = None) -> bytes:
    return sse_event(msgspec.json.encode(ChatChunk(id="chatcmpl-1", model=model, choices=choices, usage=usage)))


def provider_catalog(
    name: str, url: str, *, timeout_s: float, max_retries: int, api_key_env: str | None = None
) -> Catalog:
    """One tier served by one provider backend at ``url`` (the fake's), named ``name``."""
    provider = Provider(
        name=name,
        model="gpt-fake",
        base_url=url,
        usd_per_m_input=1,
        usd_per_m_output=2,
        api_key_env=api_key_env,
        timeout_s=timeout_s,
        max_retries=max_retries,
    )
    return Catalog(tiers=[Tier(name="t", backends=[name])], backends=[provider], baseline=name)


@pytest_asyncio.fixture
async def streaming() -> AsyncIterator[StreamingProvider]:
    server = await StreamingProvider().start()
    yield server
    await server.stop()
