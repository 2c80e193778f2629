"""Per-tenant learning from the cascade's own verdicts: each tenant's head starts as the shipped one and
takes one SGD step per observed outcome, pulled back towards the shipped weights so a handful of verdicts
nudges it rather than overwrites it. Tenants are kept least-recently-used first, at most ``max_tenants``."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
from numpy.typing import NDArray

from .model import LogisticHead, RoutePredictor, design_matrix

__all__ = ["OnlineRouter"]


class OnlineRouter:
    """A :class:`RoutePredictor` whose head each tenant refines with its own outcomes (memory: one head of
    ~400 floats per tenant, ``max_tenants`` of them)."""

    def __init__(
        self, base: RoutePredictor, *, max_tenants: int = 10_000, rate: float = 0.05, pull: float = 0.01
    ) -> None:
        if max_tenants < 1:
            raise ValueError("max_tenants must be at least 1")
        self.base = base
        self._heads: OrderedDict[str, LogisticHead] = OrderedDict()
        self._max_tenants = max_tenants
        self._rate = rate
        self._pull = pull

    def p_small_ok(self, tenant: str, vectors: NDArray[np.float32], prompts: list[str]) -> NDArray[np.float64]:
        """As :meth:`RoutePredictor.p_small_ok`, with ``tenant``'s own head when it has one."""
        return self._heads.get(tenant, self.base.head).predict(design_matrix(vectors, prompts))

    def threshold(self, quality: float) -> float:
        return self.base.threshold(quality)

    def observe(self, tenant: str, vector: NDArray[np.float32], prompt: str, small_ok: bool) -> None:
        """Learn from one verdict: the small tier's answer to ``prompt`` was accepted (True) or escalated."""
        head = self._heads.pop(tenant, self.base.head)
        x = design_matrix(vector.reshape(1, -1), [prompt])[0]
        self._heads[tenant] = head.sgd_step(x, float(small_ok), rate=self._rate, prior=self.base.head, pull=self._pull)
        while len(self._heads) > self._max_tenants:
            self._heads.popitem(last=False)

    def tenants(self) -> list[str]:
        """Tenants with a head of their own, least recently updated first."""
        return list(self._heads)
