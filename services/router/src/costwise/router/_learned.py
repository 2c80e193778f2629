"""The learned router at run time: which ``auto`` requests skip the small tier, and learning from verdicts."""

from __future__ import annotations

import logging
from collections import OrderedDict

from nats.js.kv import KeyValue

from costwise.contracts import InferenceRequest
from costwise.embed import Embedder, Vector

from ._heads import HeadStore
from .learned import OnlineRouter, RoutePredictor

__all__ = ["SmallTierOdds", "prompt_of"]

log = logging.getLogger("costwise.router")


def prompt_of(req: InferenceRequest) -> str:
    """What the router judges a request by: its last message (the question being asked)."""
    return req.messages[-1].content


class SmallTierOdds:
    """P(the small tier answers ``req`` well) per tenant, from the shipped router plus each tenant's verdicts."""

    def __init__(self, embedder: Embedder, online: OnlineRouter, quality: float, *, remember: int = 4096) -> None:
        self._embedder = embedder
        self._online = online
        self.threshold = online.threshold(quality)
        # The verdict on a request comes back to the router that routed it (usually): keep its prompt's vector
        # rather than embedding the same text a second time on the completion path.
        self._recent: OrderedDict[str, Vector] = OrderedDict()
        self._remember = remember
        self._store: HeadStore | None = None
        self._absent: OrderedDict[str, None] = OrderedDict()
        """Tenants whose store had no head when last asked (so their requests do not ask again)."""

    @classmethod
    def load(cls, embedder: Embedder, quality: float) -> SmallTierOdds:
        odds = cls(embedder, OnlineRouter(RoutePredictor.load()), quality)
        odds._online.p_small_ok("warm-up", embedder.embed_many(["warm up"]), ["warm up"])  # imports its text hashing
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
        vector = await self._embedder.embed(prompt)
        self._recent[prompt] = vector
        if len(self._recent) > self._remember:
            self._recent.popitem(last=False)
        return float(self._online.p_small_ok(req.tenant, vector.reshape(1, -1), [prompt])[0])

    async def skip_small(self, req: InferenceRequest) -> bool:
        """True when the small tier is clearly not good enough: send the request up a tier directly."""
        return await self.p_small_ok(req) < self.threshold

    async def learn(self, req: InferenceRequest, small_ok: bool) -> None:
        """The cascade's verdict on the small tier's answer: this tenant's odds move toward it."""
        prompt = prompt_of(req)
        await self._recall(req.tenant)
        vector = self._recent.pop(prompt, None)
        if vector is None:  # routed by another router instance, or long ago
            vector = await self._embedder.embed(prompt)
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
        if len(self._absent) > self._remember:
            self._absent.popitem(last=False)
