"""The provider worker against a real nats-server and a local server speaking OpenAI's protocol."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import msgspec
import pytest
import pytest_asyncio
from nats.aio.client import Client as Nats
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from costwise.catalog import CatalogError
from costwise.client import Client
from costwise.contracts import (
    ChatMessage,
    Completion,
    DeadLetter,
    ErrorCode,
    InferenceRequest,
    Job,
    UsageEvent,
    decode,
    subjects,
)
from costwise.messaging import MSG_ID, publish
from costwise.provider import ProviderSettings, ProviderWorker, build
from costwise.testing import FakeOpenAI, first_stored

from .conftest import provider_catalog


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    server = await FakeOpenAI().start()
    yield server
    await server.stop()


@pytest_asyncio.fixture
async def worker(
    nats_url: str, nc: Nats, unique: str, fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[ProviderWorker]:
    monkeypatch.setenv("COSTWISE_TEST_KEY", "sk-test-secret")
    settings = ProviderSettings(nats_url=nats_url, backend=unique, ack_wait_s=5, heartbeat_s=1, grace_s=0)
    w = await build(
        settings,
        nc=nc,
        catalog=provider_catalog(unique, fake.url, timeout_s=0.5, max_retries=1, api_key_env="COSTWISE_TEST_KEY"),
    )
    await w.start()
    yield w
    await w.stop()


async def _job(js: JetStreamContext, pool: str, rid: str, **kw: object) -> None:
    req = InferenceRequest(
        request_id=rid, tenant=pool, messages=[ChatMessage(role="user", content="capital of France?")], **kw
    )  # type: ignore[arg-type]
    job = Job(job_id=rid, request=req, pool=pool)
    await publish(js, subjects.jobs(pool), job, msg_id=subjects.dedup_id(pool, rid))


async def _completion(js: JetStreamContext, pool: str) -> Completion:
    sub = await js.subscribe(subjects.completions(pool), ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    try:
        return decode((await sub.next_msg(timeout=15)).data, Completion)
    finally:
        await sub.unsubscribe()


async def test_answer_becomes_a_completion_and_a_usage_event(
    js: JetStreamContext, worker: ProviderWorker, fake: FakeOpenAI, unique: str
) -> None:
    await _job(js, unique, "ok1", api_key_id="k1")
    done = await _completion(js, unique)
    assert done.error is None and done.text == "Paris." and done.finish_reason == "stop"
    assert done.logprobs is not None and done.logprobs.count == 1 and done.usage.completion_tokens == 1
    assert fake.last_auth == "Bearer sk-test-secret"
    event = await first_stored(js, subjects.usage(unique), UsageEvent, lambda e: e.job_id == "ok1")
    assert event.pool == unique and event.usage == done.usage and not event.spot
    assert event.api_key_id == "k1"  # billed to the request's API key


async def test_server_errors_are_retried_then_reported_as_a_failed_attempt(
    js: JetStreamContext, worker: ProviderWorker, fake: FakeOpenAI, unique: str
) -> None:
    fake.mode = "error"
    await _job(js, unique, "err1")
    done = await _completion(js, unique)
    assert done.error is not None and done.error.code == ErrorCode.PROVIDER_ERROR
    assert "HTTP 500" in done.error.message and "sk-test-secret" not in done.error.message
    assert fake.calls == 2  # one try + max_retries=1


async def test_a_hanging_provider_times_out_instead_of_holding_the_job(
    js: JetStreamContext, worker: ProviderWorker, fake: FakeOpenAI, unique: str
) -> None:
    fake.mode = "hang"
    started = time.monotonic()
    await _job(js, unique, "hang1")
    done = await _completion(js, unique)
    assert done.error is not None and "within 0.5s" in done.error.message
    assert time.monotonic() - started < 5


async def test_an_answer_that_takes_longer_than_httpxs_default_timeout_arrives(
    nats_url: str, js: JetStreamContext, nc: Nats, fake: FakeOpenAI, unique: str
) -> None:
    fake.think_s = 6.0  # a long answer written whole: past httpx's 5 s default read timeout, inside timeout_s
    settings = ProviderSettings(nats_url=nats_url, backend=unique, ack_wait_s=5, heartbeat_s=1, grace_s=0)
    patient = await build(settings, nc=nc, catalog=provider_catalog(unique, fake.url, timeout_s=30, max_retries=0))
    await patient.start()
    try:
        await _job(js, unique, "slow1")
        done = await _completion(js, unique)
    finally:
        await patient.stop()
    assert done.error is None and done.text == "Paris." and fake.calls == 1


async def test_a_passed_deadline_is_a_typed_failure_without_a_call(
    js: JetStreamContext, worker: ProviderWorker, fake: FakeOpenAI, unique: str
) -> None:
    await _job(js, unique, "late1", deadline_ms=int(time.time() * 1000) - 1)
    done = await _completion(js, unique)
    assert done.error is not None and done.error.code == ErrorCode.DEADLINE_EXCEEDED and fake.calls == 0


async def test_a_worker_pool_is_not_a_provider(nats_url: str, nc: Nats, unique: str) -> None:
    from costwise.catalog import default_catalog

    with pytest.raises(CatalogError, match="worker pool, not a provider"):
        await build(ProviderSettings(nats_url=nats_url, backend=unique), nc=nc, catalog=default_catalog(unique))


async def test_a_malformed_job_is_dead_lettered_and_the_caller_told(
    nc: Nats, js: JetStreamContext, worker: ProviderWorker, fake: FakeOpenAI, unique: str
) -> None:
    req = InferenceRequest(request_id="bad1", tenant=unique, messages=[ChatMessage(role="user", content="hi")])
    doc = msgspec.json.decode(msgspec.json.encode(Job(job_id="bad1", request=req, pool=unique)))
    doc["request"]["sampling"]["max_tokens"] = -5
    await js.publish(subjects.jobs(unique), msgspec.json.encode(doc), headers={MSG_ID: f"{unique}-bad1"})
    result = await Client(nc).result(unique, "bad1", timeout=15)
    assert result.error is not None and result.error.code == ErrorCode.MALFORMED_MESSAGE
    assert "max_tokens" in result.error.message
    letter = await first_stored(js, subjects.dead_letters("provider"), DeadLetter, lambda d: d.request_id == "bad1")
    assert letter.code == ErrorCode.MALFORMED_MESSAGE and fake.calls == 0


async def test_a_call_cut_short_by_stop_goes_back_to_the_queue_at_once(
    nats_url: str, nc: Nats, js: JetStreamContext, worker: ProviderWorker, fake: FakeOpenAI, unique: str
) -> None:
    fake.mode = "hang"
    await _job(js, unique, "cut1")
    while fake.calls == 0:
        await asyncio.sleep(0.01)
    await worker.stop()  # no grace: the call is cancelled and its job handed back (nak), not left to ack_wait
    fake.mode = "ok"
    again = await build(
        ProviderSettings(nats_url=nats_url, backend=unique, ack_wait_s=5, heartbeat_s=1, grace_s=0),
        nc=nc,
        catalog=provider_catalog(unique, fake.url, timeout_s=0.5, max_retries=1, api_key_env="COSTWISE_TEST_KEY"),
    )
    started = time.monotonic()
    await again.start()
    try:
        done = await _completion(js, unique)
    finally:
        await again.stop()
    assert done.error is None and done.text == "Paris." and time.monotonic() - started < 3


async def test_stop_closes_what_build_opened_and_nothing_injected(
    nats_url: str, nc: Nats, js: JetStreamContext, fake: FakeOpenAI, unique: str
) -> None:
    settings, catalog = (
        ProviderSettings(nats_url=nats_url, backend=unique, grace_s=0),
        provider_catalog(unique, fake.url, timeout_s=0.5, max_retries=1, api_key_env="COSTWISE_TEST_KEY"),
    )
    own = await build(settings, catalog=catalog)
    await own.start()
    await own.stop()
    assert own.nc.is_closed and own.http.is_closed
    async with httpx.AsyncClient() as http:
        injected = await build(settings, nc=nc, catalog=catalog, http=http)
        await injected.start()
        await _job(js, unique, "ok2")
        assert (await _completion(js, unique)).error is None  # served through the injected client
        await injected.stop()
        assert nc.is_connected and not http.is_closed
        body = {"model": "m", "messages": [{"role": "user", "content": "still there?"}]}
        assert (await http.post(f"{fake.url}/chat/completions", json=body)).status_code == 200
