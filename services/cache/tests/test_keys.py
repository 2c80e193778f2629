"""What the cache treats as the same request (exact) and the same context (semantic scope)."""

from __future__ import annotations

import msgspec

from costwise.cache import exact_key, is_cacheable, semantic_scope
from costwise.cache.keys import question_of
from costwise.contracts import CachePolicy, ChatMessage, InferenceRequest, SamplingParams

REQ = InferenceRequest(
    request_id="r1",
    tenant="acme",
    messages=[ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="Hi?")],
)


def test_ids_timestamps_and_callbacks_do_not_change_the_key() -> None:
    other = msgspec.structs.replace(REQ, request_id="r2", created_ms=5, callback_url="https://x.example/cb")
    assert exact_key(other) == exact_key(REQ)
    assert exact_key(REQ).startswith("acme.")


def test_every_sampling_parameter_changes_the_key() -> None:
    for change in ({"top_p": 0.5}, {"seed": 1}, {"max_tokens": 9}, {"stop": ["x"]}, {"temperature": 0.3}):
        changed = msgspec.structs.replace(REQ, sampling=SamplingParams(**change))  # type: ignore[arg-type]
        assert exact_key(changed) != exact_key(REQ), change


def test_the_semantic_scope_ignores_only_the_last_user_message() -> None:
    reworded = msgspec.structs.replace(REQ, messages=[REQ.messages[0], ChatMessage(role="user", content="Hello?")])
    assert semantic_scope(reworded) == semantic_scope(REQ) and exact_key(reworded) != exact_key(REQ)
    other_system = msgspec.structs.replace(REQ, messages=[ChatMessage(role="system", content="x"), REQ.messages[1]])
    assert semantic_scope(other_system) != semantic_scope(REQ)
    assert semantic_scope(msgspec.structs.replace(REQ, tenant="other")) != semantic_scope(REQ)


def test_only_a_user_question_is_compared() -> None:
    assert question_of(REQ) == "Hi?"
    last_is_assistant = msgspec.structs.replace(
        REQ, messages=[*REQ.messages, ChatMessage(role="assistant", content="Yo")]
    )
    assert question_of(last_is_assistant) is None


def test_sampled_and_bypassed_requests_are_not_cacheable_by_default() -> None:
    assert is_cacheable(REQ)
    assert not is_cacheable(msgspec.structs.replace(REQ, sampling=SamplingParams(temperature=0.5)))
    sampled_opt_in = msgspec.structs.replace(
        REQ, sampling=SamplingParams(temperature=0.5), cache=CachePolicy(allow_sampled=True)
    )
    assert is_cacheable(sampled_opt_in)
    assert not is_cacheable(msgspec.structs.replace(REQ, cache=CachePolicy(mode="bypass")))
    assert not is_cacheable(msgspec.structs.replace(REQ, cache=CachePolicy(ttl_s=0)))
