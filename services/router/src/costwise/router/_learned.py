"""The learned router at run time: which ``auto`` requests skip the small tier, and learning from verdicts."""

from __future__ import annotations

from collections import OrderedDict

from costwise.contracts import InferenceRequest
from costwise.embed import Embedder, Vector

from .learned import OnlineRouter, RoutePredictor

__all__ = ["SmallTierOdds", "prompt_of"]


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

    @classmethod
    def load(cls, embedder: Embedder, quality: float) -> SmallTierOdds:
        odds = cls(embedder, OnlineRouter(RoutePredictor.load()), quality)
        odds._online.p_small_ok("warm-up", embedder.embed_many(["warm up"]), ["warm up"])  # imports its text hashing
        return odds

    async def skip_small(self, req: InferenceRequest) -> bool:
        """True when the small tier is clearly not good enough: send the request up a tier directly."""
        prompt = prompt_of(req)
        vector = await self._embedder.embed(prompt)
        self._recent[prompt] = vector
        if len(self._recent) > self._remember:
            self._recent.popitem(last=False)
        p = float(self._online.p_small_ok(req.tenant, vector.reshape(1, -1), [prompt])[0])
        return p < self.threshold

    async def learn(self, req: InferenceRequest, small_ok: bool) -> None:
        """The cascade's verdict on the small tier's answer: this tenant's odds move toward it."""
        prompt = prompt_of(req)
        vector = self._recent.pop(prompt, None)
        if vector is None:  # routed by another router instance, or long ago
            vector = await self._embedder.embed(prompt)
        self._online.observe(req.tenant, vector, prompt, small_ok)
