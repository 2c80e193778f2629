"""The official openai SDK against the gateway on uvicorn: the client users will actually point at it."""

from __future__ import annotations

import asyncio
import time

import openai
import pytest
from nats.js import JetStreamContext

from costwise.contracts import ErrorCode, InferenceRequest, Result

from .conftest import failed, responding


def sdk(base_url: str, key: str, **kwargs: object) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0, **kwargs)  # type: ignore[arg-type]


async def test_a_chat_completion_comes_back_through_the_queue(
    base_url: str, tenant_key: tuple[str, str], js: JetStreamContext
) -> None:
    tenant, key = tenant_key
    async with responding(js, tenant) as responder:
        started = time.time()
        reply = await sdk(base_url, key, timeout=20).chat.completions.create(
            model="small",
            messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],
            max_tokens=17,
            temperature=0.5,
            stop=["\n"],
            seed=7,
            extra_body={"costwise": {"cache": {"mode": "bypass"}, "priority": "interactive"}},
        )
    assert reply.choices[0].message.content == "echo: hello"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.total_tokens == 5
    assert reply.model == "tiny-llama"
    [request] = responder.seen
    assert reply.id == f"chatcmpl-{request.request_id}"
    assert request.tenant == tenant and request.model == "small" and request.priority == "interactive"
    assert (request.sampling.max_tokens, request.sampling.temperature, request.sampling.stop) == (17, 0.5, ["\n"])
    assert request.sampling.seed == 7 and request.cache.mode == "bypass"
    # The SDK's own timeout (20 s) becomes the request's deadline, less the gateway's margin.
    assert request.deadline_ms is not None
    assert 19_000 <= request.deadline_ms - started * 1000 <= 20_500


async def test_the_blocking_sdk_client_works_too(
    base_url: str, tenant_key: tuple[str, str], js: JetStreamContext
) -> None:
    tenant, key = tenant_key
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0, timeout=20)
    async with responding(js, tenant):
        reply = await asyncio.to_thread(
            lambda: client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
        )
    assert reply.choices[0].message.content == "echo: hi"


async def test_a_wrong_key_is_401(base_url: str, tenant_key: tuple[str, str]) -> None:
    _, key = tenant_key
    tampered = key[:-1] + ("A" if key[-1] != "A" else "B")
    for wrong in (tampered, "cw-0000000000000000-nope", "sk-not-ours"):
        with pytest.raises(openai.AuthenticationError) as caught:
            await sdk(base_url, wrong).chat.completions.create(
                model="auto", messages=[{"role": "user", "content": "x"}]
            )
        assert caught.value.code == "invalid_api_key"


async def test_an_unknown_tier_is_404_from_the_pipelines_typed_error(
    base_url: str, tenant_key: tuple[str, str], js: JetStreamContext
) -> None:
    tenant, key = tenant_key

    async def router(request: InferenceRequest) -> Result:
        return failed(request, ErrorCode.UNKNOWN_POOL, f"model {request.model!r} is served by no pool")

    async with responding(js, tenant, router):
        with pytest.raises(openai.NotFoundError) as caught:
            await sdk(base_url, key).chat.completions.create(model="huge", messages=[{"role": "user", "content": "x"}])
    assert caught.value.code == "unknown_pool"
    assert "'huge' is served by no pool" in caught.value.message


async def test_no_result_before_the_clients_timeout_is_504_and_can_be_polled(
    base_url: str, tenant_key: tuple[str, str], js: JetStreamContext
) -> None:
    tenant, key = tenant_key
    async with responding(js, tenant, lambda request: asyncio.sleep(0)) as responder:  # never answers
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as caught:
            await sdk(base_url, key, timeout=1.5).chat.completions.create(
                model="auto", messages=[{"role": "user", "content": "slow"}]
            )
        elapsed = time.monotonic() - started
    assert caught.value.status_code == 504 and caught.value.code == "deadline_exceeded"
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert 0.9 < elapsed < 1.5  # answered before the client's own timeout fired
    [request] = responder.seen
    assert f"/v1/requests/{request.request_id}" in caught.value.message
    client = sdk(base_url, key)
    polled = await client.get(f"/requests/{request.request_id}", cast_to=object)
    assert polled["status"] == "queued"  # type: ignore[index]


async def test_an_idempotency_key_replays_its_answer_and_refuses_another_prompt(
    base_url: str, tenant_key: tuple[str, str], js: JetStreamContext
) -> None:
    tenant, key = tenant_key
    client = sdk(base_url, key, timeout=20)
    once = {"Idempotency-Key": f"sdk-{tenant}"}

    async def ask(prompt: str) -> openai.types.chat.ChatCompletion:
        return await client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": prompt}], extra_headers=once
        )

    async with responding(js, tenant) as responder:
        first, again = await ask("hello"), await ask("hello")
        with pytest.raises(openai.UnprocessableEntityError) as refused:
            await ask("goodbye")
    assert first.id == again.id == f"chatcmpl-sdk-{tenant}" and len(responder.seen) == 1
    assert refused.value.code == "idempotency_key_reused" and f"'sdk-{tenant}'" in refused.value.message
