"""The semantic cache: nearest cached question in the same scope, served only when the verifier agrees."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
import numpy as np
from opentelemetry.trace import get_current_span

from costwise.contracts import InferenceRequest
from costwise.embed import Embedder, Vector

from ._store import CachedAnswer
from ._vectors import VectorIndex
from .keys import question_of, semantic_scope

__all__ = ["Probe", "SemanticCache", "SemanticHit", "explain"]

log = logging.getLogger("costwise.cache")


class HitVerifier(Protocol):
    min_similarity: float

    def decide(self, query: str, cached: str, similarity: float, *, target_precision: float | None = None) -> Any: ...


@dataclass(frozen=True)
class Probe:
    """A request as the semantic cache sees it: computed once, used for the lookup and again to store the answer."""

    question: str
    scope: str
    vector: Vector
    embed_s: float = 0.0
    """CPU seconds the embedding took (this question's share of its batch)."""


@dataclass(frozen=True)
class SemanticHit:
    answer: CachedAnswer
    similarity: float
    compute_s: float
    """What finding it took: the embedding's CPU share, the index query (wall) and the verifier pass (CPU)."""


class SemanticCache:
    def __init__(self, embedder: Embedder, index: VectorIndex, verifier: HitVerifier) -> None:
        self.embedder = embedder
        self.index = index
        self.verifier = verifier
        # The verifier is a small transformer: off the event loop, one thread, like the embedder.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="verify")

    async def probe(self, req: InferenceRequest) -> Probe | None:
        question = question_of(req)
        if question is None:
            return None
        # The vector space is part of the scope: entries embedded by another model variant (an index kept across
        # a change of COSTWISE_CACHE_EMBED_BACKEND, a pending answer from an older process) are never compared.
        scope = f"{self.embedder.space}:{semantic_scope(req)}"
        vector, embed_s = await self.embedder.embed_costed(question)
        return Probe(question=question, scope=scope, vector=vector, embed_s=embed_s)

    async def lookup(self, req: InferenceRequest, probe: Probe, *, now_ms: int) -> SemanticHit | None:
        """The verified nearest answer in ``req``'s scope, or ``None``; either way the decision is explained on
        the current span and in the debug log (:func:`explain`)."""
        started = time.perf_counter()
        found = await self.index.nearest(req.tenant, probe.scope, probe.vector, now_ms=now_ms)
        if found is None:
            explain("no_candidate")
            return None
        candidate, similarity = str(found.payload["request_id"]), found.similarity
        if similarity < self.verifier.min_similarity:
            explain("similarity", candidate=candidate, similarity=similarity, refused_by="similarity")
            return None
        query_s = time.perf_counter() - started
        cached_question = str(found.payload["question"])
        decision, verify_s = await asyncio.get_running_loop().run_in_executor(
            self._thread, self._decide, probe.question, cached_question, similarity, req.cache.target_precision
        )
        why = "target_precision_unreachable" if decision is None else decision.reason
        probability, refused_by = getattr(decision, "probability", None), getattr(decision, "refused_by", None)
        explain(why, candidate=candidate, similarity=similarity, probability=probability, refused_by=refused_by)
        if decision is None or not decision.accepted:
            return None
        answer = msgspec.json.decode(found.payload["answer"], type=CachedAnswer)
        compute_s = probe.embed_s + query_s + verify_s
        return SemanticHit(answer=answer, similarity=min(1.0, similarity), compute_s=compute_s)

    def _decide(self, query: str, cached: str, similarity: float, target: float | None) -> tuple[Any, float]:
        """The verifier's decision and the CPU seconds it took (it runs alone on this thread)."""
        started = time.thread_time()
        try:
            decision = self.verifier.decide(query, cached, similarity, target_precision=target)
        except ValueError:  # a precision the calibration cannot promise: no semantic hit, never an error
            decision = None
        return decision, time.thread_time() - started

    async def store(self, tenant: str, key: str, probe: Probe, answer: CachedAnswer, *, expires_ms: int) -> None:
        payload = {
            "tenant": tenant,
            "request_id": answer.request_id,
            "scope": probe.scope,
            "expires_ms": float(expires_ms),
            "question": probe.question,
            "answer": msgspec.json.encode(answer).decode(),
        }
        await self.index.upsert(key, probe.vector, payload)

    async def close(self) -> None:
        """Close the index. The models stay loaded: they may be shared, and the process owns them."""
        self._thread.shutdown(wait=False, cancel_futures=True)
        await self.index.close()


def vector_bytes(vector: Vector) -> bytes:
    return np.asarray(vector, dtype=np.float32).tobytes()


def vector_from(data: bytes) -> Vector:
    return np.frombuffer(data, dtype=np.float32).copy()


def explain(
    decision: str,
    *,
    candidate: str | None = None,
    similarity: float | None = None,
    probability: float | None = None,
    refused_by: str | None = None,
) -> None:
    """Why a semantic lookup hit or missed, where a user looks for it: on the current span (the cache's consumer
    span) as ``costwise.cache.semantic.*`` and in the debug log. ``decision`` is ``accepted``, ``no_candidate``
    (nothing in scope), ``similarity`` (below the verifier's pre-threshold), ``veto:<check>`` (a lexical check
    refused: numbers, negation, …), ``verifier`` (its probability below the calibrated threshold) or
    ``target_precision_unreachable``; ``near_repeat`` is a hit the verifier served without its model. A refusal
    also names the check that refused as ``refused_by`` (``similarity``, a veto's name, ``verifier``)."""
    found = {"candidate": candidate, "similarity": similarity, "probability": probability, "refused_by": refused_by}
    attributes = {f"costwise.cache.semantic.{k}": v for k, v in found.items() if v is not None}
    get_current_span().set_attributes({"costwise.cache.semantic.decision": decision, **attributes})
    log.debug("semantic %s: %s", decision, " ".join(f"{k}={v}" for k, v in found.items() if v is not None) or "-")
