"""A local HTTP server that speaks OpenAI chat completions: the stand-in for a paid provider in tests."""

from __future__ import annotations

import asyncio
from typing import Literal

from aiohttp import web

__all__ = ["FakeOpenAI"]


class FakeOpenAI:
    """Answers ``POST /v1/chat/completions`` as ``mode`` says: ``ok``, ``error`` (HTTP 500) or ``hang``; ``ok``
    after ``think_s`` seconds (a long answer, not streamed, arrives only once it is whole).

    ``calls`` counts requests and ``last_auth`` keeps the last Authorization header, so tests can check
    retries and that the API key was sent.
    """

    def __init__(self, answer: str = "Paris.", logprob: float = -0.05) -> None:
        self.mode: Literal["ok", "error", "hang"] = "ok"
        self.answer = answer
        self.logprob = logprob
        self.think_s = 0.0
        self.calls = 0
        self.last_auth: str | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> FakeOpenAI:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)  # a hanging handler must not hold teardown
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.calls += 1
        self.last_auth = request.headers.get("Authorization")
        body = await request.json()
        if self.mode == "error":
            return web.json_response({"error": {"message": "upstream overloaded", "type": "server_error"}}, status=500)
        if self.mode == "hang":
            await asyncio.sleep(3600)
        await asyncio.sleep(self.think_s)
        words = self.answer.split()
        return web.json_response(
            {
                "id": f"chatcmpl-{self.calls}",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": self.answer},
                        "finish_reason": "stop",
                        "logprobs": {"content": [{"token": w, "logprob": self.logprob} for w in words]},
                    }
                ],
                "usage": {
                    "prompt_tokens": sum(len(m["content"].split()) for m in body["messages"]),
                    "completion_tokens": len(words),
                },
            }
        )
