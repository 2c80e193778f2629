"""Where a learned model knows what it is talking about: the region of embedding space its training prompts fill.

The router's heads were trained on MMLU and GSM8K prompts, the response verifier on GSM8K answers. On a prompt
unlike all of them (a banking FAQ, a support chat) their scores are extrapolation: measured on this data, the
router put 71 % of banking77 questions below its skip threshold — they would have gone straight to the large tier
for no reason. A :class:`Domain` lets each model abstain there instead: the request then takes the path that
needs no prediction (the cascade from the small tier, judged by the rule checks).

The domain is a set of unit centroids of the training prompts' MiniLM embeddings (spherical k-means) and a floor:
a prompt is known when its cosine to the nearest centroid reaches the floor. The floor is the ``1 - coverage``
quantile of **out-of-fold** similarities (each training prompt scored against centroids fitted without it), so
``coverage`` of prompts like the training ones are known on new data; nothing outside the training split is used.

Refit: ``python -m costwise.router.learned.domain --data ../shared/data/router/routellm --out DIR`` (RouteLLM's
MMLU + GSM8K outcomes, training split only; see the module's ``main``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .model import ARTIFACT_DIR, load_arrays, save_arrays

__all__ = ["ROUTER_DOMAIN", "VERIFIER_DOMAIN", "Domain", "spherical_kmeans"]

ROUTER_DOMAIN = "router_domain.npz"
VERIFIER_DOMAIN = "verifier_domain.npz"
Vectors = NDArray[np.float32]


@dataclass(frozen=True)
class Domain:
    """Unit centroids of a model's training prompts and the cosine below which a prompt is unlike them."""

    centroids: Vectors
    floor: float
    meta: dict[str, Any]

    @classmethod
    def load(cls, name_or_path: str | Path) -> Domain:
        """A shipped domain by file name (:data:`ROUTER_DOMAIN`, :data:`VERIFIER_DOMAIN`) or an artifact path."""
        path = Path(name_or_path)
        z, meta = load_arrays(path if path.is_absolute() or path.exists() else ARTIFACT_DIR / path)
        return cls(z["centroids"].astype(np.float32), float(z["floor"]), meta)

    def save(self, path: Path) -> None:
        save_arrays(path, self.meta, centroids=self.centroids.astype(np.float16), floor=np.float64(self.floor))

    def similarity(self, vectors: Vectors) -> NDArray[np.float32]:
        """Cosine of each (unit) vector to its nearest centroid."""
        return np.asarray((np.atleast_2d(vectors) @ self.centroids.T).max(axis=1), dtype=np.float32)

    def knows(self, vectors: Vectors) -> NDArray[np.bool_]:
        return self.similarity(vectors) >= self.floor

    @classmethod
    def fit(cls, vectors: Vectors, *, k: int, coverage: float, folds: int = 5, seed: int = 0) -> Domain:
        """Centroids from all ``vectors``; the floor from out-of-fold similarities (``folds`` folds)."""
        rng = np.random.default_rng(seed)
        fold_of = rng.permutation(len(vectors)) % folds
        held_out = np.empty(len(vectors), dtype=np.float32)
        for f in range(folds):
            inside = fold_of != f
            centroids = spherical_kmeans(vectors[inside], k, seed=seed + f)
            held_out[~inside] = (vectors[~inside] @ centroids.T).max(axis=1)
        floor = float(np.quantile(held_out, 1.0 - coverage))
        meta = {"k": k, "coverage": coverage, "folds": folds, "seed": seed, "prompts": len(vectors)}
        return cls(spherical_kmeans(vectors, k, seed=seed), floor, meta)


def spherical_kmeans(vectors: Vectors, k: int, *, seed: int, iterations: int = 30) -> Vectors:
    """k unit centroids maximising the summed cosine of each vector to its centroid (k-means on the sphere)."""
    rng = np.random.default_rng(seed)
    k = min(k, len(vectors))
    centroids = vectors[rng.choice(len(vectors), size=k, replace=False)].copy()
    for _ in range(iterations):
        nearest = (vectors @ centroids.T).argmax(axis=1)
        sums = np.zeros_like(centroids)
        np.add.at(sums, nearest, vectors)
        empty = ~np.bincount(nearest, minlength=k).astype(bool)
        sums[empty] = centroids[empty]  # a centroid nobody chose stays where it was
        centroids = sums / np.linalg.norm(sums, axis=1, keepdims=True)
    return centroids.astype(np.float32)
