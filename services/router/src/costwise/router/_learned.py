"""The learned router at run time: which ``auto`` requests skip the small tier, and learning from verdicts."""

from __future__ import annotations

import logging
from collections import OrderedDict

from nats.js.kv import KeyValue

from costwise.contracts import InferenceRequest
from costwise.embed import Embedder, Vector

from ._heads import HeadStore
from .learned import OnlineRouter, ResponseVerifier, RoutePredictor
from .learned.domain import ROUTER_DOMAIN, VERIFIER_DOMAIN, Domain

__all__ = ["GatedVerifier", "PromptVectors", "SmallTierOdds", "prompt_of"]

log = logging.getLogger("costwise.router")
_REMEMBER_ABSENT = 4096


def prompt_of(req: InferenceRequest) -> str:
    """What the router judges a request by: its last message (the question being asked)."""
    return req.messages[-1].content


class PromptVectors:
    """MiniLM vectors of the prompts being routed, kept for a while: the cascade's verdict on a request comes back
    to the router that routed it (usually), and its prompt is not embedded a second time."""

    def __init__(self, embedder: Embedder, *, remember: int = 4096) -> None:
        self.embedder = embedder
        self._recent: OrderedDict[str, Vector] = OrderedDict()
        self._remember = remember

    async def of(self, prompt: str) -> Vector:
        vector = self._recent.get(prompt)
        if vector is None:  # routed by another router instance, or long ago
            vector = self._recent[prompt] = await self.embedder.embed(prompt)
            if len(self._recent) > self._remember:
                self._recent.popitem(last=False)
        return vector

    def forget(self, prompt: str) -> None:
        """The request's verdict is in: nothing will ask for this vector again."""
        self._recent.pop(prompt, None)


class SmallTierOdds:
    """P(the small tier answers ``req`` well) per tenant, from the shipped router plus each tenant's verdicts."""

    def __init__(
        self, vectors: PromptVectors, online: OnlineRouter, quality: float, *, domain: Domain | None = None
    ) -> None:
        self._vectors = vectors
        self._online = online
        self._domain = domain
        """Where the shipped router knows its prompts; elsewhere it never skips the small tier (module docs of
        :mod:`.learned.domain`)."""
        self.threshold = online.threshold(quality)
        self._store: HeadStore | None = None
        self._absent: OrderedDict[str, None] = OrderedDict()
        """Tenants whose store had no head when last asked (so their requests do not ask again)."""

    @classmethod
    def load(cls, vectors: PromptVectors, quality: float) -> SmallTierOdds:
        odds = cls(vectors, OnlineRouter(RoutePredictor.load()), quality, domain=Domain.load(ROUTER_DOMAIN))
        warm = vectors.embedder.embed_many(["warm up"])
        odds._online.p_small_ok("warm-up", warm, ["warm up"])  # imports its text hashing
        return odds

    def persist(self, kv: KeyValue, *, flush_s: float) -> None:
        """Keep every tenant's correction in ``kv`` from now on (and read it from there at first use)."""
        self._store = HeadStore(kv, self._online.base_id, flush_s=flush_s)
        self._store.start(self._online.head)

    async def close(self) -> None:
        if self._store is not None:
            await self._store.stop(self._online.head)

    async def p_small_ok(self, req: InferenceRequest) -> float:
        prompt = prompt_of(req)
        await self._recall(req.tenant)
        vector = await self._vectors.of(prompt)
        return float(self._online.p_small_ok(req.tenant, vector.reshape(1, -1), [prompt])[0])

    async def skip_small(self, req: InferenceRequest, threshold: float | None = None) -> bool:
        """True when the small tier is clearly not good enough: send the request up a tier directly (below
        ``threshold``, default the router's own). Never for a prompt unlike the router's training prompts: its
        score there is a guess, the cascade's check is not."""
        if self._domain is not None and not self._domain.knows(await self._vectors.of(prompt_of(req)))[0]:
            return False
        return await self.p_small_ok(req) < (self.threshold if threshold is None else threshold)

    async def learn(self, req: InferenceRequest, small_ok: bool) -> None:
        """The cascade's verdict on the small tier's answer: this tenant's odds move toward it."""
        prompt = prompt_of(req)
        await self._recall(req.tenant)
        vector = await self._vectors.of(prompt)
        self._vectors.forget(prompt)
        self._online.observe(req.tenant, vector, prompt, small_ok)
        if self._store is not None:
            self._absent.pop(req.tenant, None)
            self._store.changed(req.tenant)

    async def _recall(self, tenant: str) -> None:
        """At a tenant's first use (or after its correction left this router's memory): read the stored one."""
        if self._store is None or self._online.knows(tenant) or tenant in self._absent:
            return
        stored = await self._store.read(tenant)
        try:
            if stored is not None:
                self._online.adopt(tenant, stored.weights, stored.bias)
                return
        except ValueError as exc:  # a damaged entry: start this tenant afresh (its next flush replaces it)
            log.warning("ignoring the stored routing head of tenant %s: %s", tenant, exc)
        self._absent[tenant] = None
        if len(self._absent) > _REMEMBER_ABSENT:
            self._absent.popitem(last=False)


class GatedVerifier:
    """The response verifier, asked only about prompts like those it was trained on (GSM8K-style math word
    problems); elsewhere the cascade judges by its rule checks alone rather than by an uninformed score."""

    def __init__(self, verifier: ResponseVerifier, domain: Domain, vectors: PromptVectors) -> None:
        self._verifier = verifier
        self._domain = domain
        self._vectors = vectors

    @classmethod
    def load(
        cls, vectors: PromptVectors, *, direct_below: float | None = None, escalate_below: float | None = None
    ) -> GatedVerifier:
        """The shipped verifier and its domain, at the shipped operating point unless one is given."""
        verifier = ResponseVerifier.load().at(direct_below=direct_below, escalate_below=escalate_below)
        return cls(verifier, Domain.load(VERIFIER_DOMAIN), vectors)

    async def for_prompt(self, prompt: str) -> ResponseVerifier | None:
        return self._verifier if self._domain.knows(await self._vectors.of(prompt))[0] else None
