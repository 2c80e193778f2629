"""When two requests are the same request: the canonical form the exact cache hashes."""

from __future__ import annotations

import hashlib

import msgspec

from costwise.contracts import ChatMessage, InferenceRequest, SamplingParams

__all__ = ["exact_key", "is_cacheable", "question_of", "semantic_scope"]


class _Canonical(msgspec.Struct, frozen=True, kw_only=True):
    # Everything that can change the answer, and nothing that cannot (ids, timestamps, callback, priority).
    # SamplingParams is taken whole, so a parameter added to it later is part of the key automatically.
    tenant: str
    model: str
    messages: list[ChatMessage]
    sampling: SamplingParams


def exact_key(req: InferenceRequest) -> str:
    """``<tenant>.<sha256 of the canonical request>``: a valid KV key, and one tenant's keys share a prefix."""
    canonical = _Canonical(tenant=req.tenant, model=req.model, messages=req.messages, sampling=req.sampling)
    return f"{req.tenant}.{hashlib.sha256(msgspec.json.encode(canonical)).hexdigest()}"


def semantic_scope(req: InferenceRequest) -> str:
    """What must match exactly for a semantic hit: everything but the wording of the last user message.

    Tenant, model/tier, system prompt and every earlier turn, and all sampling parameters: a cached answer
    written for another persona, conversation or length limit is a wrong answer, however similar the question.
    """
    canonical = _Canonical(tenant=req.tenant, model=req.model, messages=req.messages[:-1], sampling=req.sampling)
    return hashlib.sha256(msgspec.json.encode(canonical)).hexdigest()


def question_of(req: InferenceRequest) -> str | None:
    """The text the semantic cache compares: the last message, when the user wrote it."""
    last = req.messages[-1]
    return last.content if last.role == "user" and last.content.strip() else None


def is_cacheable(req: InferenceRequest) -> bool:
    """May this request's answer be stored? Sampled answers are not reproducible unless the tenant opts in."""
    policy = req.cache
    if policy.mode == "bypass" or policy.ttl_s == 0:
        return False
    return req.sampling.temperature == 0.0 or policy.allow_sampled
