"""The learned router: P(the small tier answers well | prompt) from a MiniLM embedding and cheap features.

Weights are a logistic head (plain arrays in an ``.npz``, no pickles), so predicting is one matrix product and
needs neither scikit-learn nor torch beyond the embedder the service already runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .features import prompt_features

__all__ = ["ARTIFACT_DIR", "DEFAULT_ARTIFACT", "LogisticHead", "RoutePredictor", "design_matrix"]

ARTIFACT_DIR = Path(__file__).parent / "artifact"
DEFAULT_ARTIFACT = "router.npz"


@dataclass(frozen=True)
class LogisticHead:
    """``sigmoid(((x - mean) / scale) @ weights + bias)``."""

    weights: NDArray[np.float64]
    bias: float
    mean: NDArray[np.float64]
    scale: NDArray[np.float64]

    def logit(self, x: NDArray[Any]) -> NDArray[np.float64]:
        return np.asarray(((x - self.mean) / self.scale) @ self.weights + self.bias, dtype=np.float64)

    def predict(self, x: NDArray[Any]) -> NDArray[np.float64]:
        return _sigmoid(self.logit(x))

    def sgd_step(self, x: NDArray[Any], y: float, *, rate: float, prior: LogisticHead, pull: float) -> LogisticHead:
        """One log-loss gradient step on one example, with an L2 pull towards ``prior`` (the shipped weights)."""
        z = (x - self.mean) / self.scale
        err = y - float(_sigmoid(z @ self.weights + self.bias))
        weights = self.weights + rate * (err * z - pull * (self.weights - prior.weights))
        return replace(self, weights=weights, bias=self.bias + rate * (err - pull * (self.bias - prior.bias)))


@dataclass(frozen=True)
class RoutePredictor:
    """P(small tier OK) for a prompt, and the threshold below which a prompt goes straight to the large tier."""

    head: LogisticHead
    qualities: NDArray[np.float64]
    thresholds: NDArray[np.float64]
    meta: dict[str, Any]

    @classmethod
    def load(cls, path: Path | str | None = None) -> RoutePredictor:
        """The artifact at ``path``; ``None``: the one shipped in this package (trained on RouteLLM's MMLU and
        GSM8K outcomes, Mixtral-8x7B vs GPT-4, training split only)."""
        with np.load(ARTIFACT_DIR / DEFAULT_ARTIFACT if path is None else path, allow_pickle=False) as z:
            head = LogisticHead(z["weights"], float(z["bias"]), z["mean"], z["scale"])
            return cls(head, z["qualities"], z["thresholds"], json.loads(str(z["meta"])))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as fh:
            np.savez_compressed(
                fh,
                weights=self.head.weights,
                bias=np.float64(self.head.bias),
                mean=self.head.mean,
                scale=self.head.scale,
                qualities=self.qualities,
                thresholds=self.thresholds,
                meta=np.str_(json.dumps(self.meta, sort_keys=True)),
            )

    def p_small_ok(self, vectors: NDArray[np.float32], prompts: list[str]) -> NDArray[np.float64]:
        """P(the small tier answers well), one per prompt; ``vectors`` are the prompts' unit MiniLM embeddings."""
        return self.head.predict(design_matrix(vectors, prompts))

    def threshold(self, quality: float) -> float:
        """Send a prompt straight to the large tier when ``p_small_ok`` is below this, to keep ``quality`` (the
        share of the large tier's accuracy, e.g. 0.95) on data like the training data. 1.0 → everything."""
        if quality >= self.qualities[-1]:
            return float(self.thresholds[-1]) if quality <= 1.0 else float("inf")
        return float(np.interp(quality, self.qualities, self.thresholds))


def design_matrix(vectors: NDArray[np.float32], prompts: list[str]) -> NDArray[np.float64]:
    """The router's input: the embedding followed by :func:`prompt_features`."""
    if len(vectors) != len(prompts):
        raise ValueError(f"{len(vectors)} vectors for {len(prompts)} prompts")
    cheap = np.array([prompt_features(p) for p in prompts], dtype=np.float64).reshape(len(prompts), -1)
    return np.hstack([np.asarray(vectors, dtype=np.float64), cheap])


def _sigmoid(z: Any) -> Any:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))
