"""The exact cache on a real nats-server: hits, misses, what is never stored, tenants, TTL, bad input."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
import pytest_asyncio
from nats.aio.client import Client as Nats
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costwise.cache import Cache, CacheSettings, EdgeIndex, SemanticCache, build
from costwise.client import Client, new_request_id
from costwise.contracts import (
    CacheInvalidation,
    CachePolicy,
    ChatMessage,
    DeadLetter,
    ErrorCode,
    InferenceRequest,
    Output,
    Result,
    SamplingParams,
    Usage,
    subjects,
)
from costwise.messaging import MSG_ID, publish
from costwise.testing import first_stored


@pytest_asyncio.fixture
async def cache(nats_url: str, semantic_cache: SemanticCache) -> AsyncIterator[Cache]:
    service = await build(CacheSettings(nats_url=nats_url), semantic=semantic_cache)
    await service.start()
    yield service
    await service.stop()


# Reworded questions the verifier must accept, and near-misses it must refuse.
PARAPHRASES = [
    ("How do I reset my password?", "How can I reset my password?"),
    ("What is the best way to learn Python?", "What's the best way to learn Python?"),
]
NEAR_MISSES = [
    ("Where is my order 48213?", "Where is my order 91377?"),
    ("Can I return an item after 30 days?", "Can I return an item after 90 days?"),
    ("Is it safe to take ibuprofen with alcohol?", "Is it not safe to take ibuprofen with alcohol?"),
]


def _request(tenant: str, prompt: str = "What is the capital of France?", **changes: object) -> InferenceRequest:
    req = InferenceRequest(
        request_id=new_request_id(), tenant=tenant, messages=[ChatMessage(role="user", content=prompt)]
    )
    return msgspec.structs.replace(req, **changes)


async def _answer(js: JetStreamContext, req: InferenceRequest, text: str = "Paris.", **changes: object) -> None:
    """What the router publishes when a worker answered ``req``."""
    result = Result(
        request_id=req.request_id,
        tenant=req.tenant,
        status="ok",
        output=Output(text=text, finish_reason="stop"),
        source="engine",
        model="m",
        usage=Usage(prompt_tokens=7, completion_tokens=2),
    )
    result = msgspec.structs.replace(result, **changes)
    msg_id = subjects.dedup_id(req.tenant, req.request_id)
    await publish(js, subjects.results(req.tenant, req.request_id), result, msg_id=msg_id)


async def _routed(js: JetStreamContext, req: InferenceRequest) -> InferenceRequest:
    return await first_stored(
        js, subjects.route(req.tenant), InferenceRequest, lambda r: r.request_id == req.request_id, timeout=10
    )


async def _miss_then_answer(nc: Nats, req: InferenceRequest, **changes: object) -> None:
    js = nc.jetstream()
    await Client(nc).publish(req)
    await _routed(js, req)
    await _answer(js, req, **changes)


async def _outcome(nc: Nats, req: InferenceRequest) -> str:
    """'hit' when the cache answered ``req``, 'miss' when it forwarded it to the router."""
    return "miss" if await _cached_result(nc, req) is None else "hit"


async def _cached_result(nc: Nats, req: InferenceRequest) -> Result | None:
    """The cache's answer to ``req``, or None when it forwarded ``req`` to the router."""
    await Client(nc).publish(req)
    hit = asyncio.create_task(Client(nc).result(req.tenant, req.request_id, timeout=10))
    routed = asyncio.create_task(_routed(nc.jetstream(), req))
    done, pending = await asyncio.wait({hit, routed}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    return hit.result() if hit in done else None


async def _stored(nc: Nats, req: InferenceRequest) -> None:
    # The answer is stored after the cache consumes the result; wait until a probe hits (each probe that misses
    # takes its own round trip: on a loaded 2-core machine storing has taken more than 5 s).
    for _ in range(150):
        if await _outcome(nc, msgspec.structs.replace(req, request_id=new_request_id())) == "hit":
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the answer was never stored")


async def test_miss_is_forwarded_to_the_router_unchanged(nc: Nats, cache: Cache, unique: str) -> None:
    req = _request(unique)
    await Client(nc).publish(req)
    assert await _routed(nc.jetstream(), req) == req


async def test_identical_request_is_answered_from_the_cache(nc: Nats, cache: Cache, unique: str) -> None:
    first = _request(unique)
    await _miss_then_answer(nc, first)
    await _stored(nc, first)
    again = msgspec.structs.replace(first, request_id=new_request_id(), api_key_id="k1")  # not part of the key
    await Client(nc).publish(again)
    result = await Client(nc).result(unique, again.request_id, timeout=10)
    assert result.status == "ok" and result.source == "cache_exact" and result.api_key_id == "k1"
    assert result.output == Output(text="Paris.", finish_reason="stop")
    assert result.cache is not None and result.cache.cached_request_id == first.request_id
    assert result.cache.saved == Usage(prompt_tokens=7, completion_tokens=2) and result.usage == Usage()
    assert 0 < result.cache.compute_s < 1  # measured (a KV read), for billing to price


@pytest.mark.parametrize(
    "change",
    [
        {"model": "large"},
        {"sampling": SamplingParams(max_tokens=17)},
        {"sampling": SamplingParams(stop=["."])},
        {"messages": [ChatMessage(role="system", content="Answer in French."), ChatMessage(role="user", content="q")]},
        {"messages": [ChatMessage(role="user", content="What is the capital of Spain?")]},
    ],
    ids=["model", "max_tokens", "stop", "system_prompt", "question"],
)
async def test_anything_that_changes_the_answer_misses(
    nc: Nats, cache: Cache, unique: str, change: dict[str, object]
) -> None:
    first = _request(unique)
    await _miss_then_answer(nc, first)
    await _stored(nc, first)
    other = msgspec.structs.replace(first, request_id=new_request_id(), **change)
    assert await _outcome(nc, other) == "miss"


async def test_one_tenants_answer_is_never_served_to_another(nc: Nats, cache: Cache, unique: str) -> None:
    first = _request(unique)
    await _miss_then_answer(nc, first)
    await _stored(nc, first)
    assert await _outcome(nc, _request(f"{unique}-other")) == "miss"


@pytest.mark.parametrize(
    ("request_change", "result_change"),
    [
        ({}, {"output": Output(text="Par", finish_reason="length")}),
        ({}, {"status": "error", "output": None}),
        ({"sampling": SamplingParams(temperature=0.7)}, {}),
        ({"cache": CachePolicy(mode="bypass")}, {}),
    ],
    ids=["truncated", "error", "sampled", "bypass"],
)
async def test_answers_that_must_not_be_cached_are_not(
    nc: Nats, cache: Cache, unique: str, request_change: dict[str, object], result_change: dict[str, object]
) -> None:
    first = _request(unique, **request_change)
    await _miss_then_answer(nc, first, **result_change)
    # Give the cache time to consume the result, then prove a storable answer *would* have been stored.
    control = _request(unique, prompt="control")
    await _miss_then_answer(nc, control)
    await _stored(nc, control)
    assert await _outcome(nc, msgspec.structs.replace(first, request_id=new_request_id())) == "miss"
    # Nothing is left of the request either: the record a miss writes goes when its answer is not stored.
    answers = await nc.jetstream().key_value(subjects.CACHE_EXACT.bucket)
    assert (await answers.get(f"{unique}.r.{control.request_id}")).value
    with pytest.raises(KeyNotFoundError):
        await answers.get(f"{unique}.r.{first.request_id}")


async def test_sampled_answers_are_cached_when_the_tenant_opts_in(nc: Nats, cache: Cache, unique: str) -> None:
    first = _request(unique, sampling=SamplingParams(temperature=0.7), cache=CachePolicy(allow_sampled=True))
    await _miss_then_answer(nc, first)
    await _stored(nc, first)


async def test_entries_expire_after_their_ttl(nc: Nats, cache: Cache, unique: str) -> None:
    first = _request(unique, cache=CachePolicy(ttl_s=1))
    await _miss_then_answer(nc, first)
    await _stored(nc, first)
    await asyncio.sleep(2.5)
    assert await _outcome(nc, msgspec.structs.replace(first, request_id=new_request_id())) == "miss"


async def test_refresh_skips_the_lookup_and_replaces_the_stored_answer(nc: Nats, cache: Cache, unique: str) -> None:
    first = _request(unique)
    await _miss_then_answer(nc, first)
    await _stored(nc, first)
    fresh = _request(unique, cache=CachePolicy(mode="refresh"))
    await _miss_then_answer(nc, fresh, output=Output(text="Paris, France.", finish_reason="stop"))
    for _ in range(50):  # until the cache has consumed the fresh answer
        again = await _cached_result(nc, _request(unique))
        if again is not None and again.cache is not None and again.cache.cached_request_id == fresh.request_id:
            break
        await asyncio.sleep(0.1)
    assert again is not None and again.output is not None and again.output.text == "Paris, France."


def test_ttl_comes_from_the_request_then_the_tenant_then_the_default() -> None:
    settings = CacheSettings(ttl_s=600, tenant_ttl_s={"acme": 60})
    assert settings.ttl_for("acme", 5) == 5
    assert settings.ttl_for("acme", None) == 60
    assert settings.ttl_for("other", None) == 600


async def test_entries_survive_a_restart_of_the_service(
    nats_url: str, nc: Nats, unique: str, semantic_models: Any, tmp_path: Path
) -> None:
    def semantic() -> SemanticCache:  # the same on-disk index, reopened
        embedder, verifier = semantic_models
        return SemanticCache(embedder, EdgeIndex.open(tmp_path / "index"), verifier)

    first = _request(unique, prompt=PARAPHRASES[0][0])
    index = semantic()
    service = await build(CacheSettings(nats_url=nats_url), semantic=index)
    await service.start()
    await _miss_then_answer(nc, first)
    await _stored(nc, first)
    await service.stop()
    await index.close()  # injected: the test's to close, not the service's
    restarted = await build(CacheSettings(nats_url=nats_url), semantic=semantic())
    await restarted.start()
    try:
        assert await _outcome(nc, msgspec.structs.replace(first, request_id=new_request_id())) == "hit"
        reworded = await _cached_result(nc, _request(unique, prompt=PARAPHRASES[0][1]))
        assert reworded is not None and reworded.source == "cache_semantic"
    finally:
        await restarted.stop()


@pytest.mark.parametrize(
    "payload",
    [
        b'{"type":"inference_request.v1","request_id":"%s","tenant":"%s","messages":[]}',
        b'{"type":"inference_request.v1","request_id":"%s","tenant":"%s","messages":[{"role":"user","content":"\xff\xfe"}]}',
    ],
    ids=["empty_messages", "not_utf8"],
)
async def test_bad_requests_get_a_typed_error_and_a_dead_letter(
    nc: Nats, cache: Cache, unique: str, payload: bytes
) -> None:
    rid = new_request_id()
    js = nc.jetstream()
    await js.publish(subjects.requests(unique), payload % (rid.encode(), unique.encode()), headers={MSG_ID: rid})
    result = await Client(nc).result(unique, rid, timeout=10)
    assert result.error is not None and result.error.code == ErrorCode.MALFORMED_MESSAGE
    letter = await first_stored(js, subjects.dead_letters("cache"), DeadLetter, lambda d: d.request_id == rid)
    assert letter.code == ErrorCode.MALFORMED_MESSAGE
    # ... and the cache keeps serving.
    assert await _outcome(nc, _request(unique)) == "miss"


@pytest.mark.parametrize(("cached", "asked"), PARAPHRASES)
async def test_a_reworded_question_gets_a_verified_semantic_hit(
    nc: Nats, cache: Cache, unique: str, cached: str, asked: str
) -> None:
    first = _request(unique, prompt=cached)
    await _miss_then_answer(nc, first)
    await _stored(nc, first)
    result = await _cached_result(nc, _request(unique, prompt=asked))
    assert result is not None and result.source == "cache_semantic"
    assert result.output == Output(text="Paris.", finish_reason="stop")
    assert result.cache is not None and result.cache.kind == "semantic"
    assert result.cache.cached_request_id == first.request_id and 0.8 < result.cache.similarity <= 1.0
    assert 0 < result.cache.compute_s < 5  # embedding share + index query + verifier pass, measured


@pytest.mark.parametrize(("cached", "asked"), NEAR_MISSES, ids=["order_id", "number", "negation"])
async def test_similar_questions_that_differ_in_substance_miss(
    nc: Nats, cache: Cache, unique: str, cached: str, asked: str
) -> None:
    first = _request(unique, prompt=cached)
    await _miss_then_answer(nc, first)
    await _stored(nc, first)
    assert await _outcome(nc, _request(unique, prompt=asked)) == "miss"


async def test_a_precision_the_verifier_cannot_promise_means_no_semantic_hit(
    nc: Nats, cache: Cache, unique: str
) -> None:
    cached, asked = PARAPHRASES[0]
    first = _request(unique, prompt=cached)
    await _miss_then_answer(nc, first)
    await _stored(nc, first)
    strict = _request(unique, prompt=asked, cache=CachePolicy(target_precision=0.999))
    assert await _outcome(nc, strict) == "miss"
    assert await _outcome(nc, _request(unique, prompt=asked)) == "hit"  # the default target still serves it


@pytest.mark.parametrize("scope", ["other_tenant", "system_prompt", "semantic_off"])
async def test_semantic_hits_stay_in_scope(nc: Nats, cache: Cache, unique: str, scope: str) -> None:
    cached, asked = PARAPHRASES[0]
    first = _request(unique, prompt=cached)
    await _miss_then_answer(nc, first)
    await _stored(nc, first)
    probes = {
        "other_tenant": _request(f"{unique}-other", prompt=asked),
        "system_prompt": _request(
            unique,
            messages=[ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content=asked)],
        ),
        "semantic_off": _request(unique, prompt=asked, cache=CachePolicy(semantic=False)),
    }
    assert await _outcome(nc, probes[scope]) == "miss"


async def _forgotten(nc: Nats, req: InferenceRequest) -> None:
    # The cache applies an invalidation a moment after it is stored; wait until a probe misses.
    for _ in range(50):
        if await _outcome(nc, msgspec.structs.replace(req, request_id=new_request_id())) == "miss":
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the answer was never forgotten")


async def test_one_answer_is_forgotten_by_its_request_id_in_both_caches(nc: Nats, cache: Cache, unique: str) -> None:
    wrong, kept = _request(unique, prompt=PARAPHRASES[0][0]), _request(unique, prompt="What is the capital of Italy?")
    for req in (wrong, kept):
        await _miss_then_answer(nc, req)
        await _stored(nc, req)
    await Client(nc).invalidate(unique, wrong.request_id, reason="the answer was wrong")
    await _forgotten(nc, wrong)
    assert await _outcome(nc, _request(unique, prompt=PARAPHRASES[0][1])) == "miss"  # no semantic hit either
    assert await _outcome(nc, msgspec.structs.replace(kept, request_id=new_request_id())) == "hit"


async def test_a_tenants_answers_are_forgotten_together_and_no_one_elses(nc: Nats, cache: Cache, unique: str) -> None:
    other = f"{unique}b"
    ours = [_request(unique), _request(unique, prompt=PARAPHRASES[1][0])]
    theirs = _request(other)
    for req in (*ours, theirs):
        await _miss_then_answer(nc, req)
        await _stored(nc, req)
    await Client(nc).invalidate(unique)
    for req in ours:
        await _forgotten(nc, req)
    assert await _outcome(nc, _request(unique, prompt=PARAPHRASES[1][1])) == "miss"
    assert await _outcome(nc, msgspec.structs.replace(theirs, request_id=new_request_id())) == "hit"


async def test_an_invalidation_on_another_tenants_subject_is_refused(
    nc: Nats, js: JetStreamContext, cache: Cache, unique: str
) -> None:
    victim = f"{unique}v"
    req = _request(victim)
    await _miss_then_answer(nc, req)
    await _stored(nc, req)
    forged = CacheInvalidation(tenant=victim, reason="forged")
    await publish(js, subjects.cache_control(unique), forged, msg_id=f"{unique}-forged")
    letter = await first_stored(
        js, subjects.dead_letters("cache"), DeadLetter, lambda d: d.subject == subjects.cache_control(unique)
    )
    assert letter.code == ErrorCode.TENANT_MISMATCH and victim in letter.reason
    assert await _outcome(nc, msgspec.structs.replace(req, request_id=new_request_id())) == "hit"


async def test_a_request_whose_payload_names_another_tenant_is_refused_to_its_publisher(
    nc: Nats, js: JetStreamContext, cache: Cache, unique: str
) -> None:
    victim = f"{unique}v"
    await _miss_then_answer(nc, _request(victim))  # the victim has an answer a forged request could read
    forged = _request(victim)
    await publish(js, subjects.requests(unique), forged, msg_id=f"{unique}-forged")
    answer = await first_stored(js, subjects.results(unique, forged.request_id), Result, lambda r: True)
    assert answer.error is not None and answer.error.code is ErrorCode.TENANT_MISMATCH
    info = await js.stream_info(subjects.RESULTS.name, subjects_filter=subjects.results(victim, forged.request_id))
    assert not info.state.subjects, "neither a hit nor an error may land among the victim's results"


async def test_stop_closes_what_build_opened_and_nothing_injected(
    nats_url: str, nc: Nats, semantic_cache: SemanticCache, unique: str
) -> None:
    own = await build(CacheSettings(nats_url=nats_url, semantic=False))
    await own.start()
    await own.stop()
    assert own.nc.is_closed
    injected = await build(CacheSettings(nats_url=nats_url), nc=nc, semantic=semantic_cache)
    await injected.start()
    await injected.stop()
    assert nc.is_connected
    assert await semantic_cache.probe(_request(unique)) is not None  # its models and index are still open


async def test_the_vector_index_sweeps_expired_and_surplus_entries(tmp_path: Path) -> None:
    index = EdgeIndex.open(tmp_path / "idx")
    rng = np.random.default_rng(0)
    for i in range(5):
        payload = {"tenant": "t", "scope": "s", "request_id": f"r{i}", "expires_ms": float(1_000 + i)}
        await index.upsert(f"k{i}", rng.random(384, dtype=np.float32), payload)
    # At 1_000, r0 has expired; of the four left, the two closest to expiry are evicted to keep two.
    assert await index.sweep(1_000, max_entries=2) == 2
    probe = rng.random(384, dtype=np.float32)
    found = await index.nearest("t", "s", probe, now_ms=0)
    assert found is not None and found.payload["request_id"] in {"r3", "r4"}
    await index.close()


async def test_every_semantic_decision_is_explained_on_the_cache_span(
    nats_url: str,
    nc: Nats,
    semantic_cache: SemanticCache,
    unique: str,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
) -> None:
    traced = await build(
        CacheSettings(nats_url=nats_url), nc=nc, semantic=semantic_cache, tracer_provider=tracer_provider
    )
    await traced.start()
    try:
        cached, asked = PARAPHRASES[0]
        first = _request(unique, prompt=cached)
        await _miss_then_answer(nc, first)
        await _stored(nc, first)
        hit, veto = _request(unique, prompt=asked), _request(unique, prompt="How do I reset my password 2?")
        assert await _outcome(nc, hit) == "hit" and await _outcome(nc, veto) == "miss"
        elsewhere = _request(f"{unique}x", prompt=asked)  # another tenant: nothing in its scope
        assert await _outcome(nc, elsewhere) == "miss"
    finally:
        await traced.stop()

    def decision(req: InferenceRequest) -> dict[str, object]:
        (span,) = [
            s
            for s in span_exporter.get_finished_spans()
            if (s.attributes or {}).get("messaging.message.id") == subjects.dedup_id(req.tenant, req.request_id)
            and s.name == f"{subjects.requests(req.tenant)} process"  # not its result's span (same dedup id)
        ]
        return {k.removeprefix("costwise.cache.semantic."): v for k, v in (span.attributes or {}).items()}

    accepted = decision(hit)
    assert accepted["decision"] == "accepted" and accepted["candidate"] == first.request_id
    assert 0.8 < float(accepted["similarity"]) <= 1.0 and 0 < float(accepted["probability"]) <= 1.0
    assert str(decision(veto)["decision"]).startswith("veto:")
    assert decision(elsewhere)["decision"] == "no_candidate"
