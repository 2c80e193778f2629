"""The cache's decisions without NATS: what a request may use and leave behind, what a hit answers, what is kept."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from costwise.cache import CachedAnswer, Probe
from costwise.cache._policy import answer_of, hit_result, pending_for, plan, storable
from costwise.contracts import (
    CacheHit,
    CachePolicy,
    ChatMessage,
    InferenceRequest,
    Output,
    Result,
    SamplingParams,
    Usage,
    now_ms,
)

REQ = InferenceRequest(request_id="r1", tenant="acme", messages=[ChatMessage(role="user", content="Hi?")])


def _with(**policy: object) -> InferenceRequest:
    return msgspec.structs.replace(REQ, cache=CachePolicy(**policy))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("request_", "look_up", "store", "semantic"),
    [
        (REQ, True, True, True),
        (_with(mode="refresh"), False, True, True),  # a fresh answer, stored (replacing) for later ones
        (_with(mode="bypass"), False, False, False),  # nothing read, nothing kept: not worth an embedding
        (_with(semantic=False), True, True, False),
        (_with(ttl_s=0), True, False, True),
        (msgspec.structs.replace(REQ, sampling=SamplingParams(temperature=0.7)), True, False, True),
        (
            msgspec.structs.replace(_with(allow_sampled=True), sampling=SamplingParams(temperature=0.7)),
            True,
            True,
            True,
        ),
    ],
)
def test_the_plan_follows_the_requests_policy(
    request_: InferenceRequest, look_up: bool, store: bool, semantic: bool
) -> None:
    todo = plan(request_)
    assert (todo.look_up, todo.store, todo.semantic) == (look_up, store, semantic)


def test_a_hit_answers_with_the_stored_output_generates_nothing_and_says_what_it_saved() -> None:
    saved = Usage(prompt_tokens=30, completion_tokens=7)
    answer = CachedAnswer(
        request_id="r0", output=Output(text="Paris.", finish_reason="stop"), model="m", usage=saved, stored_ms=1
    )
    hit = CacheHit(kind="semantic", cached_request_id="r0", similarity=0.97, saved=saved)
    result = hit_result(REQ, answer, hit, now_ms(lambda: 12.5))
    assert (result.source, result.completed_ms, result.usage) == ("cache_semantic", 12_500, Usage())
    assert result.cache is hit and result.output == answer.output and result.request_id == REQ.request_id


def test_a_refresh_replaces_and_a_probe_travels_with_the_pending_record() -> None:
    probe = Probe(question="Hi?", scope="space:abc", vector=np.ones(4, dtype=np.float32))
    plain = pending_for(REQ, "acme.k", 60, None)
    assert (plain.key, plain.ttl_s, plain.replace, plain.vector) == ("acme.k", 60, False, None)
    semantic = pending_for(_with(mode="refresh"), "acme.k", 60, probe)
    assert semantic.replace and semantic.scope == "space:abc" and semantic.vector == np.ones(4, np.float32).tobytes()


@pytest.mark.parametrize(
    ("changes", "kept"),
    [
        ({}, True),
        ({"source": "cache_exact"}, False),  # our own hit: stored already
        ({"status": "error", "output": None}, False),
        ({"output": Output(text="Par", finish_reason="length")}, False),  # truncated
    ],
)
def test_only_complete_answers_a_model_produced_are_stored(changes: dict[str, object], kept: bool) -> None:
    result = Result(
        request_id="r1", tenant="acme", status="ok", output=Output(text="Paris.", finish_reason="stop"), source="engine"
    )
    result = msgspec.structs.replace(result, **changes)
    assert storable(result) is kept
    if kept:
        assert answer_of(result, 5).output == result.output
