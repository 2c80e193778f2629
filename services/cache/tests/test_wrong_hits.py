"""Wrong-hit feedback on a real nats-server: a reported hit is forgotten and recorded, the same pair never hits again
for that tenant (other tenants unaffected), billing hears of it; a semantic lookup that missed is billed as overhead."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
import pytest_asyncio
from nats.aio.client import Client as Nats
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError

from costwise.cache import Cache, CacheSettings, SemanticCache, build
from costwise.cache._feedback import WrongPair
from costwise.cache._policy import FLOOR_MARGIN, above_floor
from costwise.client import Client, new_request_id
from costwise.contracts import (
    CacheWrongHit,
    ChatMessage,
    DeadLetter,
    ErrorCode,
    InferenceRequest,
    Output,
    Result,
    Usage,
    UsageEvent,
    subjects,
)
from costwise.messaging import publish
from costwise.testing import first_stored

CACHED, ASKED = "How do I reset my password?", "How can I reset my password?"  # a pair the verifier accepts


@pytest_asyncio.fixture
async def cache(nats_url: str, semantic_cache: SemanticCache) -> AsyncIterator[Cache]:
    service = await build(CacheSettings(nats_url=nats_url), semantic=semantic_cache)
    await service.start()
    yield service
    await service.stop()


def _request(tenant: str, prompt: str) -> InferenceRequest:
    return InferenceRequest(
        request_id=new_request_id(), tenant=tenant, messages=[ChatMessage(role="user", content=prompt)]
    )


async def _answer(js: JetStreamContext, req: InferenceRequest, **changes: object) -> None:
    """What the router publishes when a worker answered ``req``."""
    result = Result(
        request_id=req.request_id,
        tenant=req.tenant,
        status="ok",
        output=Output(text="Use the reset link.", finish_reason="stop"),
        source="engine",
        model="m",
        usage=Usage(prompt_tokens=7, completion_tokens=4),
    )
    msg_id = subjects.dedup_id(req.tenant, req.request_id)
    await publish(
        js, subjects.results(req.tenant, req.request_id), msgspec.structs.replace(result, **changes), msg_id=msg_id
    )


async def _asked(nc: Nats, req: InferenceRequest) -> Result | None:
    """The cache's answer to ``req``, or None when it forwarded ``req`` to the router."""
    await Client(nc).publish(req)
    hit = asyncio.create_task(Client(nc).result(req.tenant, req.request_id, timeout=10))
    routed = asyncio.create_task(
        first_stored(
            nc.jetstream(), subjects.route(req.tenant), InferenceRequest, lambda r: r.request_id == req.request_id
        )
    )
    done, pending = await asyncio.wait({hit, routed}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    return hit.result() if hit in done else None


async def _cached(nc: Nats, tenant: str, prompt: str) -> InferenceRequest:
    """Ask ``prompt`` (a miss), answer it like a worker, and wait until the cache serves it."""
    req = _request(tenant, prompt)
    assert await _asked(nc, req) is None
    await _answer(nc.jetstream(), req)
    for _ in range(50):
        if await _asked(nc, _request(tenant, prompt)) is not None:
            return req
        await asyncio.sleep(0.1)
    raise AssertionError("the answer was never stored")


async def _report(js: JetStreamContext, tenant: str, request_id: str) -> None:
    command = CacheWrongHit(tenant=tenant, request_id=request_id, reason="it was about something else")
    await publish(js, subjects.cache_control(tenant), command, msg_id=new_request_id())


async def _recorded(js: JetStreamContext, tenant: str, request_id: str) -> WrongPair:
    kv = await js.key_value(subjects.CACHE_FEEDBACK.bucket)
    for _ in range(100):
        try:
            entry = await kv.get(f"{tenant}.wrong.{request_id}")
        except KeyNotFoundError:
            await asyncio.sleep(0.1)
            continue
        return msgspec.json.decode(entry.value or b"", type=WrongPair)
    raise AssertionError("the wrong hit was never recorded")


async def test_a_reported_pair_never_hits_again_for_its_tenant_and_other_tenants_keep_it(
    nc: Nats, cache: Cache, unique: str
) -> None:
    js, other = nc.jetstream(), f"{unique}-other"
    first = await _cached(nc, unique, CACHED)
    await _cached(nc, other, CACHED)
    wrong = _request(unique, ASKED)
    served = await _asked(nc, wrong)
    assert served is not None and served.cache is not None and served.cache.kind == "semantic"

    await _report(js, unique, wrong.request_id)
    pair = await _recorded(js, unique, wrong.request_id)
    assert (pair.kind, pair.question, pair.cached_question) == ("semantic", ASKED, CACHED)
    assert pair.cached_request_id == first.request_id and pair.similarity == served.cache.similarity
    told = await first_stored(js, subjects.usage(unique), UsageEvent, lambda e: e.kind == "cache_wrong_hit", timeout=10)
    assert told.request_id == wrong.request_id  # billing counts it

    again = await _cached(nc, unique, CACHED)  # the entry was forgotten: the cached question is a miss, stored anew
    assert again.request_id != first.request_id
    assert await _asked(nc, _request(unique, ASKED)) is None  # same pair, same similarity: under the tenant's floor
    hit = await _asked(nc, _request(other, ASKED))  # the other tenant reported nothing
    assert hit is not None and hit.source == "cache_semantic"


async def test_a_semantic_lookup_that_missed_is_billed_to_the_tenant(nc: Nats, cache: Cache, unique: str) -> None:
    req = _request(unique, "What is the boiling point of water at sea level?")
    assert await _asked(nc, req) is None  # nothing cached yet: the lookup served nothing
    event = await first_stored(
        nc.jetstream(), subjects.usage(unique), UsageEvent, lambda e: e.request_id == req.request_id, timeout=10
    )
    assert event.kind == "cache_lookup" and event.pool == "cache" and 0 < event.engine_s < 5
    assert event.usage == Usage()  # no tokens: the cost is the embedding and the index query


async def test_an_exact_hit_reported_wrong_is_forgotten_without_tightening_the_threshold(
    nc: Nats, cache: Cache, unique: str
) -> None:
    js = nc.jetstream()
    await _cached(nc, unique, CACHED)
    wrong = _request(unique, CACHED)
    served = await _asked(nc, wrong)
    assert served is not None and served.source == "cache_exact"
    await _report(js, unique, wrong.request_id)
    pair = await _recorded(js, unique, wrong.request_id)
    assert pair.kind == "exact" and pair.similarity == 1.0
    kv = await js.key_value(subjects.CACHE_FEEDBACK.bucket)
    try:
        await kv.get(f"{unique}.floor")
        raise AssertionError("an exact hit must not set a similarity floor")
    except KeyNotFoundError:
        pass
    await _cached(nc, unique, CACHED)  # forgotten (a miss), then stored anew
    hit = await _asked(nc, _request(unique, ASKED))
    assert hit is not None and hit.source == "cache_semantic"  # the tenant's semantic hits are untouched


async def test_a_request_the_cache_did_not_answer_is_refused_and_keeps_its_result(
    nc: Nats, cache: Cache, unique: str
) -> None:
    js = nc.jetstream()
    answered = _request(unique, CACHED)
    await _answer(js, answered)  # answered by a model, not the cache
    for request_id in (answered.request_id, new_request_id()):  # ... and one with no result at all
        await _report(js, unique, request_id)
        letter = await first_stored(
            js,
            subjects.dead_letters("cache"),
            DeadLetter,
            lambda d, rid=request_id: rid.encode() in d.payload,  # type: ignore[misc]
            timeout=10,
        )
        assert letter.code == ErrorCode.INVALID_REQUEST and "no cache hit" in letter.reason
    last = await js.get_last_msg(subjects.RESULTS.name, subjects.results(unique, answered.request_id))
    stored = msgspec.json.decode(last.data or b"", type=Result)
    assert stored.source == "engine" and stored.status == "ok"  # no error result was published after it


async def test_a_report_naming_another_tenant_than_its_subject_is_refused(nc: Nats, cache: Cache, unique: str) -> None:
    js, victim = nc.jetstream(), f"{unique}-victim"
    await _cached(nc, victim, CACHED)
    served = await _asked(nc, _request(victim, ASKED))
    assert served is not None and served.source == "cache_semantic"
    forged = CacheWrongHit(tenant=victim, request_id=served.request_id)
    await publish(js, subjects.cache_control(unique), forged, msg_id=new_request_id())
    letter = await first_stored(
        js, subjects.dead_letters("cache"), DeadLetter, lambda d: served.request_id.encode() in d.payload, timeout=10
    )
    assert letter.code == ErrorCode.TENANT_MISMATCH
    hit = await _asked(nc, _request(victim, ASKED))  # the victim's entry and threshold are untouched
    assert hit is not None and hit.source == "cache_semantic"


def test_a_semantic_hit_must_clear_its_tenants_floor_by_the_margin() -> None:
    assert above_floor(0.9, None)  # a tenant that reported nothing keeps the verifier's decision
    assert not above_floor(0.9, 0.9) and not above_floor(0.9 + FLOOR_MARGIN / 2, 0.9)  # the same pair, re-embedded
    assert not above_floor(0.85, 0.9) and above_floor(0.9 + 2 * FLOOR_MARGIN, 0.9)
