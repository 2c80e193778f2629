"""The semantic cache: the nearest cached questions in the same scope, one served only when the verifier agrees."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
import numpy as np
from opentelemetry.trace import get_current_span

from costwise.contracts import InferenceRequest
from costwise.embed import Embedder, Vector

from ._store import CachedAnswer
from ._vectors import Candidate, VectorIndex
from .keys import question_of, semantic_scope

__all__ = ["Probe", "SemanticCache", "SemanticHit", "explain"]

log = logging.getLogger("costwise.cache")


class HitVerifier(Protocol):
    @property
    def candidate_floor(self) -> float:
        """The lowest cosine the verifier can accept at all: a candidate below it is refused without a call."""
        ...

    def decide_all(
        self, query: str, candidates: Sequence[tuple[str, float]], *, target_precision: float | None = None
    ) -> list[Any]: ...


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
    def __init__(self, embedder: Embedder, index: VectorIndex, verifier: HitVerifier, *, candidates: int = 1) -> None:
        self.embedder = embedder
        self.index = index
        self.verifier = verifier
        self.candidates = candidates
        """How many nearest cached questions the verifier judges per lookup (the best accepted one is served)."""
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
        """The best verified answer among the ``candidates`` nearest in ``req``'s scope, or ``None``; either way
        the decision is explained on the current span and in the debug log (:func:`explain`)."""
        started = time.perf_counter()
        found = await self.index.nearest_k(req.tenant, probe.scope, probe.vector, now_ms=now_ms, limit=self.candidates)
        if not found:
            explain("no_candidate")
            return None
        usable = [c for c in found if c.similarity >= self.verifier.candidate_floor]
        if not usable:
            nearest = found[0]
            explain("similarity", candidate=_id(nearest), similarity=nearest.similarity, refused_by="similarity")
            return None
        query_s = time.perf_counter() - started
        pairs = [(str(c.payload["question"]), c.similarity) for c in usable]
        decisions, verify_s = await asyncio.get_running_loop().run_in_executor(
            self._thread, self._decide, probe.question, pairs, req.cache.target_precision
        )
        chosen = _best(decisions)
        shown, decision = usable[chosen or 0], decisions[chosen or 0] if decisions else None
        why = "target_precision_unreachable" if decision is None else decision.reason
        probability, refused_by = getattr(decision, "probability", None), getattr(decision, "refused_by", None)
        explain(why, candidate=_id(shown), similarity=shown.similarity, probability=probability, refused_by=refused_by)
        if chosen is None:
            return None
        answer = msgspec.json.decode(shown.payload["answer"], type=CachedAnswer)
        compute_s = probe.embed_s + query_s + verify_s
        return SemanticHit(answer=answer, similarity=min(1.0, shown.similarity), compute_s=compute_s)

    def _decide(self, query: str, pairs: list[tuple[str, float]], target: float | None) -> tuple[list[Any], float]:
        """The verifier's decisions and the CPU seconds they took (it runs alone on this thread); no decisions
        for a precision the calibration cannot promise (no semantic hit, never an error)."""
        started = time.thread_time()
        try:
            decisions = self.verifier.decide_all(query, pairs, target_precision=target)
        except ValueError:
            decisions = []
        return decisions, time.thread_time() - started

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


def _id(candidate: Candidate) -> str:
    return str(candidate.payload["request_id"])


def _best(decisions: list[Any]) -> int | None:
    """Which decision to serve: the nearest near-repeat, else the accepted one the verifier is surest of."""
    accepted = [(i, d) for i, d in enumerate(decisions) if d is not None and d.accepted]
    if not accepted:
        return None
    return max(accepted, key=lambda x: (x[1].probability is None, x[1].probability or 0.0, -x[0]))[0]


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
    also names the check that refused as ``refused_by`` (``similarity``, a veto's name, ``verifier``). With several
    candidates, ``candidate`` is the one served, or on a miss the nearest (and its decision)."""
    found = {"candidate": candidate, "similarity": similarity, "probability": probability, "refused_by": refused_by}
    attributes = {f"costwise.cache.semantic.{k}": v for k, v in found.items() if v is not None}
    get_current_span().set_attributes({"costwise.cache.semantic.decision": decision, **attributes})
    log.debug("semantic %s: %s", decision, " ".join(f"{k}={v}" for k, v in found.items() if v is not None) or "-")
