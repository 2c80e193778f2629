"""The hit verifier the semantic cache calls before serving a cached answer to a different-looking question."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .lexical import veto
from .metrics import threshold_for
from .model import PairClassifier, encode, load_tokenizer
from .normalise import near_repeat

__all__ = ["ARTIFACT_DIR", "BASE_SPACE", "Decision", "Verifier"]

ARTIFACT_DIR = Path(__file__).resolve().parent / "artifact"
"""The artifact shipped in the wheel: ``weights.safetensors`` (fine-tuned layers) and ``verifier.json``."""

WEIGHTS_FILE = "weights.safetensors"
META_FILE = "verifier.json"
BASE_SPACE = "minilm-l6"
"""The embedding space the artifact's top-level calibration was fitted in (fp32 MiniLM: torch or ONNX)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """Why a candidate hit was accepted or refused (for logs and metrics)."""

    accepted: bool
    reason: str
    """"accepted", "near_repeat" (accepted: the same question typed differently), "similarity" (below the
    pre-threshold), "veto:<check>", or "verifier"."""
    probability: float | None = None
    """The verifier's same-question probability, when it ran."""
    refused_by: str | None = None
    """The check that refused: "similarity", a veto's name ("numbers", "negation", "scope", …) or "verifier"."""


class Verifier:
    """Decides whether a cached question's answer may be served for a new query.

    A hit needs all three: cosine similarity at or above ``min_similarity``, no lexical veto, and a
    probability at or above the threshold calibrated for the wanted precision. The probability combines the
    cross-encoder's logit with the cosine (the two err differently; together they rank better than either).
    With ``near_repeats``, a pair no veto refused that is the same question typed differently (case,
    punctuation, contractions, courtesy, a typo, clause order: :func:`.normalise.near_repeat`) is served
    without the model, from the lower cosine ``near_repeat_min_similarity`` up: a misspelled word moves
    MiniLM's vector more than it changes the question.
    """

    def __init__(
        self,
        model: PairClassifier,
        tokenizer: Any,
        meta: dict[str, Any],
        *,
        checks: Sequence[str] | None = None,
        near_repeats: bool | None = None,
    ) -> None:
        self._model = model.eval()
        self._tokenizer = tokenizer
        self.meta = meta
        self.space = str(meta.get("space", BASE_SPACE))
        self.max_length = int(meta["max_length"])
        self.min_similarity = float(meta["min_similarity"])
        self.default_target_precision = float(meta["default_target_precision"])
        self.checks: tuple[str, ...] = tuple(meta["vetoes"] if checks is None else checks)
        self.near_repeats = bool(meta.get("near_repeats", False) if near_repeats is None else near_repeats)
        self.near_repeat_min_similarity = float(meta.get("near_repeat_min_similarity", self.min_similarity))
        self._table: list[dict[str, float]] = meta["calibration"]["table"]
        self._combiner: dict[str, float] = meta["calibration"]["combiner"]
        if self._table:
            self.threshold()  # an artifact whose default target was never calibrated must not load

    @classmethod
    def load(
        cls,
        path: Path | None = None,
        *,
        threads: int = 1,
        space: str = BASE_SPACE,
        checks: Sequence[str] | None = None,
        near_repeats: bool | None = None,
    ) -> Verifier:
        """Load an artifact directory (default: the one shipped in this package) onto the base MiniLM weights.

        ``checks`` / ``near_repeats`` override the artifact's vetoes and near-repeat rule (to compare settings,
        e.g. ``checks=LEGACY_CHECKS, near_repeats=False`` is the verifier as shipped before issue 16).

        ``threads`` is applied with :func:`torch.set_num_threads`, which is process-wide. ``space``: the
        embedding space of the cosines it will be given (``Embedder.space``); the pre-threshold and the
        calibration are fitted per space, and a space the artifact was never calibrated for is refused.
        """
        path = Path(path) if path is not None else ARTIFACT_DIR
        torch.set_num_threads(threads)
        meta = for_space(json.loads((path / META_FILE).read_text(encoding="utf-8")), space, path)
        model = PairClassifier.from_base(trainable_layers=int(meta["trainable_layers"]))
        model.load_trained(path / WEIGHTS_FILE)
        return cls(model, load_tokenizer(), meta, checks=checks, near_repeats=near_repeats)

    @torch.inference_mode()
    def logits(self, pairs: Sequence[tuple[str, str]], *, batch_size: int = 64) -> list[float]:
        """The cross-encoder's raw same-question logit for each ``(a, b)`` pair, computed in batches."""
        # Batching neighbours of similar length keeps padding (wasted compute) small.
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
        out = [0.0] * len(pairs)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = encode(self._tokenizer, [pairs[i] for i in idx], self.max_length)
            for i, logit in zip(idx, self._model(**batch).tolist(), strict=True):
                out[i] = float(logit)
        return out

    def score(
        self, pairs: Sequence[tuple[str, str]], similarities: Sequence[float] | None = None, *, batch_size: int = 64
    ) -> list[float]:
        """Probability that each ``(a, b)`` pair asks the same question, computed in batches.

        With ``similarities`` (the pairs' embedding cosines) the probability also weighs the cosine, through
        the logistic combiner fitted on calibration data: that is the score the thresholds apply to.
        """
        logits = self.logits(pairs, batch_size=batch_size)
        if similarities is None:
            return [float(p) for p in 1.0 / (1.0 + np.exp(-np.asarray(logits)))]
        return self.combine(logits, similarities)

    def combine(self, logits: Sequence[float], similarities: Sequence[float]) -> list[float]:
        """The calibrated probability from cross-encoder logits and embedding cosines (what thresholds cut)."""
        c = self._combiner
        z = c["logit"] * np.asarray(logits) + c["cosine"] * np.asarray(similarities, dtype=np.float64) + c["bias"]
        return [float(p) for p in 1.0 / (1.0 + np.exp(-z))]

    @property
    def candidate_floor(self) -> float:
        """The lowest cosine any decision can accept: candidates below it need not reach :meth:`decide`."""
        if not self.near_repeats:
            return self.min_similarity
        return min(self.min_similarity, self.near_repeat_min_similarity)

    @property
    def max_target_precision(self) -> float:
        """The strictest precision calibration could vouch for (a higher target raises ValueError)."""
        return max(float(r["target_precision"]) for r in self._table)

    def threshold(self, target_precision: float | None = None) -> float:
        """The probability threshold calibrated for ``target_precision`` (default: the artifact's)."""
        return threshold_for(
            self._table, self.default_target_precision if target_precision is None else target_precision
        )

    def decide(self, query: str, cached: str, similarity: float, *, target_precision: float | None = None) -> Decision:
        """Run the checks cheapest-first and say which one refused, if any (``Decision.refused_by``)."""
        decision = self.decide_all(query, [(cached, similarity)], target_precision=target_precision)[0]
        assert decision is not None, "one candidate and no near-repeat: the model decided"
        return decision

    def decide_all(
        self, query: str, candidates: Sequence[tuple[str, float]], *, target_precision: float | None = None
    ) -> list[Decision | None]:
        """:meth:`decide` for several cached questions ``(text, cosine)`` at once: the model scores every one the
        checks let through in one batch. ``None``: not scored, because a near-repeat among them needs no model."""
        threshold = self.threshold(target_precision)  # fail fast on an unreachable target
        decisions = [self._checks(query, cached, similarity) for cached, similarity in candidates]
        todo = [i for i, d in enumerate(decisions) if d is None]
        if not todo or any(d is not None and d.accepted for d in decisions):
            return decisions
        scored = self.score([(query, candidates[i][0]) for i in todo], [candidates[i][1] for i in todo])
        for i, probability in zip(todo, scored, strict=True):
            accepted = probability >= threshold
            reason, refused_by = ("accepted", None) if accepted else ("verifier", "verifier")
            decisions[i] = Decision(accepted, reason, probability, refused_by)
        return decisions

    def _checks(self, query: str, cached: str, similarity: float) -> Decision | None:
        """What is decided without the model (``None``: the model decides)."""
        if similarity < self.candidate_floor:
            return Decision(False, "similarity", refused_by="similarity")
        vetoed = veto(query, cached, self.checks)
        if vetoed is not None:
            return Decision(False, f"veto:{vetoed}", refused_by=vetoed)
        if self.near_repeats and similarity >= self.near_repeat_min_similarity and near_repeat(query, cached):
            return Decision(True, "near_repeat")
        if similarity < self.min_similarity:  # only a near-repeat is served below the model's pre-threshold
            return Decision(False, "similarity", refused_by="similarity")
        return None

    def accept(self, query: str, cached: str, similarity: float, *, target_precision: float | None = None) -> bool:
        """Whether ``cached``'s answer may be served for ``query`` (``similarity``: their embedding cosine)."""
        return self.decide(query, cached, similarity, target_precision=target_precision).accepted


def for_space(meta: dict[str, Any], space: str, path: Path) -> dict[str, Any]:
    """The artifact's metadata with the pre-threshold and calibration fitted for ``space``'s cosines."""
    if space == meta.get("space", BASE_SPACE):
        return meta
    if space not in meta.get("spaces", {}):
        raise ValueError(
            f"the hit verifier in {path} is not calibrated for {space} embeddings; calibrate it with "
            f"`python -m costwise.cache.verify.train --pairs PAIRS --out {path} --calibrate-only --embed-backend …`"
        )
    return {**meta, **meta["spaces"][space], "space": space}
