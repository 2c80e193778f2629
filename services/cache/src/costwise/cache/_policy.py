"""The cache's decisions, without NATS: what a request may use and leave behind, and what a hit answers.

Pure functions of the request (or result) and the time, so every rule is unit-testable with an injected clock.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import msgspec

from costwise.contracts import CacheHit, InferenceRequest, Result, Usage, UsageEvent

from ._semantic import Probe, vector_bytes
from ._store import CachedAnswer, Pending
from .keys import is_cacheable

__all__ = [
    "FLOOR_MARGIN",
    "Plan",
    "above_floor",
    "answer_of",
    "hit_result",
    "lookup_usage",
    "pending_for",
    "plan",
    "storable",
    "wrong_hit_usage",
]

# Only answers a model produced are stored: never errors, our own hits, or truncated output.
_STORABLE_SOURCES = ("engine", "provider")
_POOL = "cache"  # the "pool" of the cache's own usage events (a label in the ledger, never a job subject)

FLOOR_MARGIN = 1e-3
"""How far above its tenant's floor a semantic hit's similarity must be. The same two questions embedded again (in
another batch, by another instance) come back within ~1e-6 of the similarity reported; 1e-3 is far more than that
and far less than the gap between two different rewordings."""


class Plan(NamedTuple):
    """What one request may do with the cache."""

    look_up: bool
    """A stored answer may be served (cache mode ``use``)."""
    store: bool
    """The answer this request gets will be stored for later ones."""
    semantic: bool
    """The question is worth embedding: it is looked up by meaning now, or stored with its vector later."""


def plan(req: InferenceRequest) -> Plan:
    look_up, store = req.cache.mode == "use", is_cacheable(req)
    return Plan(look_up=look_up, store=store, semantic=req.cache.semantic and (look_up or store))


def hit_result(req: InferenceRequest, answer: CachedAnswer, hit: CacheHit, now_ms: int) -> Result:
    """The result a hit answers ``req`` with: the stored output, nothing generated (usage zero), what it saved."""
    return Result(
        request_id=req.request_id,
        tenant=req.tenant,
        status="ok",
        output=answer.output,
        source="cache_exact" if hit.kind == "exact" else "cache_semantic",
        model=answer.model,
        usage=Usage(),
        callback_url=req.callback_url,
        created_ms=req.created_ms,
        completed_ms=now_ms,
        cache=hit,
        api_key_id=req.api_key_id,
    )


def pending_for(req: InferenceRequest, key: str, ttl_s: int, probe: Probe | None) -> Pending:
    """What to remember between a miss and its result: where to store the answer (and its question's vector)."""
    pending = Pending(key=key, ttl_s=ttl_s, replace=req.cache.mode == "refresh")
    if probe is None:
        return pending
    return msgspec.structs.replace(
        pending, question=probe.question, scope=probe.scope, vector=vector_bytes(probe.vector)
    )


def storable(result: Result) -> bool:
    return (
        result.status == "ok"
        and result.source in _STORABLE_SOURCES
        and result.output is not None
        and result.output.finish_reason == "stop"
    )


def answer_of(result: Result, now_ms: int) -> CachedAnswer:
    assert result.output is not None, "only storable results are kept"
    return CachedAnswer(
        request_id=result.request_id, output=result.output, model=result.model, usage=result.usage, stored_ms=now_ms
    )


def above_floor(similarity: float, floor: float | None) -> bool:
    """Whether a semantic hit clears its tenant's floor: the highest similarity that tenant reported a wrong hit at.

    The simplest rule that keeps a reported pair from ever hitting again for that tenant, learnt from its own reports
    only (other tenants are untouched), and that needs no second model pass: the cosine is already known. A stricter
    verifier probability was the alternative; it would let a pair through again whenever the calibrated probability
    moves (another target precision, a retrained verifier), a floor on the cosine does not.
    """
    return floor is None or similarity > floor + FLOOR_MARGIN


CacheEventKind = Literal["cache_lookup", "cache_wrong_hit"]


def lookup_usage(req: InferenceRequest, seconds: float, now_ms: int) -> UsageEvent:
    """The usage event of a semantic lookup that served nothing: the tenant pays for it as the cache's overhead."""
    return _cache_event(req.request_id, req.tenant, req.api_key_id, "cache_lookup", now_ms, engine_s=seconds)


def wrong_hit_usage(result: Result, now_ms: int) -> UsageEvent:
    """The event that tells billing a hit was reported wrong (nothing consumed; the report counts them)."""
    return _cache_event(
        result.request_id, result.tenant, result.api_key_id, "cache_wrong_hit", now_ms, model=result.model or ""
    )


def _cache_event(
    request_id: str,
    tenant: str,
    api_key_id: str | None,
    kind: CacheEventKind,
    now_ms: int,
    *,
    engine_s: float = 0.0,
    model: str = "",
) -> UsageEvent:
    # The cache runs no job: its events are the request's, under the cache's own pool label, with no tokens.
    return UsageEvent(
        request_id=request_id,
        job_id=request_id,
        tenant=tenant,
        pool=_POOL,
        worker_id="",
        spot=False,
        model=model,
        usage=Usage(),
        engine_s=engine_s,
        ts_ms=now_ms,
        api_key_id=api_key_id,
        kind=kind,
    )
