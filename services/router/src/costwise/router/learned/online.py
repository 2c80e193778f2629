"""Per-tenant learning from the cascade's own verdicts: a tenant's logit is the shipped router's plus a
correction of its own (a logistic head over the embedding + cheap features, starting at zero), trained by one
SGD step per verdict, normalized so one verdict moves its own prompt's logit by about ``rate`` times the miss, with an
L2 pull back to zero, so a handful of verdicts nudges the shipped router rather than overwrites it. Tenants are kept least-recently-updated first, at most ``max_tenants``."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import replace

import numpy as np
from numpy.typing import NDArray

from .model import LogisticHead, RoutePredictor, design_matrix, sigmoid

__all__ = ["OnlineRouter"]


class OnlineRouter:
    """A :class:`RoutePredictor` each tenant refines with its own outcomes (memory: ~400 floats per tenant)."""

    def __init__(
        self, base: RoutePredictor, *, max_tenants: int = 10_000, rate: float = 0.1, pull: float = 0.01
    ) -> None:
        if max_tenants < 1:
            raise ValueError("max_tenants must be at least 1")
        self.base = base
        self._heads: OrderedDict[str, LogisticHead] = OrderedDict()
        # the correction reads the same standardized inputs as the shipped vector head, starting at zero
        self._zero = LogisticHead(np.zeros_like(base.vector.weights), 0.0, base.vector.mean, base.vector.scale)
        self._max_tenants = max_tenants
        self._rate = rate
        self._pull = pull

    def p_small_ok(self, tenant: str, vectors: NDArray[np.float32], prompts: list[str]) -> NDArray[np.float64]:
        """As :meth:`RoutePredictor.p_small_ok`, with ``tenant``'s own correction when it has one."""
        logit = self.base.logit(vectors, prompts)
        head = self._heads.get(tenant)
        return sigmoid(logit if head is None else logit + head.logit(design_matrix(vectors, prompts)))

    def threshold(self, quality: float) -> float:
        return self.base.threshold(quality)

    def observe(self, tenant: str, vector: NDArray[np.float32], prompt: str, small_ok: bool) -> None:
        """Learn from one verdict: the small tier's answer to ``prompt`` was accepted (True) or escalated."""
        err = float(small_ok) - float(self.p_small_ok(tenant, vector.reshape(1, -1), [prompt])[0])
        head = self._heads.pop(tenant, self._zero)
        x = design_matrix(vector.reshape(1, -1), [prompt])[0]
        self._heads[tenant] = head.sgd_step(x, err, rate=self._rate, pull=self._pull)
        while len(self._heads) > self._max_tenants:
            self._heads.popitem(last=False)

    @property
    def base_id(self) -> str:
        """Names the shipped router a correction was learned against (a correction means nothing for another)."""
        digest = hashlib.blake2b(self.base.vector.weights.tobytes(), digest_size=8)
        digest.update(self.base.text.weights.tobytes())
        return digest.hexdigest()

    def knows(self, tenant: str) -> bool:
        """``tenant`` has a correction in this router's memory."""
        return tenant in self._heads

    def head(self, tenant: str) -> tuple[list[float], float] | None:
        """``tenant``'s correction as plain numbers (weights, bias), or ``None`` while it has none."""
        head = self._heads.get(tenant)
        return None if head is None else (head.weights.tolist(), head.bias)

    def adopt(self, tenant: str, weights: list[float], bias: float) -> None:
        """Take ``tenant``'s correction as stored (by this or another router) unless it already learned one here."""
        if tenant in self._heads:
            return
        if len(weights) != len(self._zero.weights):
            raise ValueError(f"a correction of {len(weights)} weights for a head of {len(self._zero.weights)}")
        self._heads[tenant] = replace(self._zero, weights=np.asarray(weights, dtype=np.float64), bias=bias)
        while len(self._heads) > self._max_tenants:
            self._heads.popitem(last=False)

    def tenants(self) -> list[str]:
        """Tenants with a head of their own, least recently updated first."""
        return list(self._heads)
