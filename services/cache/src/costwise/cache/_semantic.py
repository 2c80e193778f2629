"""The semantic cache: nearest cached question in the same scope, served only when the verifier agrees."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
import numpy as np

from costwise.contracts import InferenceRequest
from costwise.embed import Embedder, Vector

from ._store import CachedAnswer
from ._vectors import VectorIndex
from .keys import question_of, semantic_scope

__all__ = ["Probe", "SemanticCache", "SemanticHit"]

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


@dataclass(frozen=True)
class SemanticHit:
    answer: CachedAnswer
    similarity: float


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
        return Probe(question=question, scope=scope, vector=await self.embedder.embed(question))

    async def lookup(self, req: InferenceRequest, probe: Probe, *, now_ms: int) -> SemanticHit | None:
        found = await self.index.nearest(req.tenant, probe.scope, probe.vector, now_ms=now_ms)
        if found is None or found.similarity < self.verifier.min_similarity:
            return None
        cached_question = str(found.payload["question"])
        decision = await asyncio.get_running_loop().run_in_executor(
            self._thread, self._decide, probe.question, cached_question, found.similarity, req.cache.target_precision
        )
        if decision is None or not decision.accepted:
            why = "target precision out of reach" if decision is None else decision.reason
            log.debug("semantic candidate refused (%s, similarity %.3f)", why, found.similarity)
            return None
        answer = msgspec.json.decode(found.payload["answer"], type=CachedAnswer)
        return SemanticHit(answer=answer, similarity=min(1.0, found.similarity))

    def _decide(self, query: str, cached: str, similarity: float, target: float | None) -> Any:
        try:
            return self.verifier.decide(query, cached, similarity, target_precision=target)
        except ValueError:  # a precision the calibration cannot promise: no semantic hit, never an error
            return None

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
