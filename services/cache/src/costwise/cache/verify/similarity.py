"""Cosine similarity of question pairs under the cache's own embedder (all-MiniLM-L6-v2), for offline runs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from costwise.embed import Backend, Embedder

__all__ = ["cosine_similarities"]


def cosine_similarities(
    pairs: Sequence[tuple[str, str]], *, backend: Backend = "torch", batch_size: int = 128
) -> list[float]:
    """Cosine of each pair's normalised sentence embeddings, as the cache's Qdrant search would see it.

    ``backend``: the embedding backend whose vectors the cache stores (int8 vectors give other cosines).
    """
    embedder = Embedder.load(threads=1, backend=backend)
    texts = sorted({t for pair in pairs for t in pair})  # embed each distinct question once
    try:
        vectors = np.concatenate(
            [embedder.embed_many(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
        )
    finally:
        embedder.close()
    row = {t: i for i, t in enumerate(texts)}
    a = vectors[[row[x] for x, _ in pairs]]
    b = vectors[[row[y] for _, y in pairs]]
    return [float(c) for c in (a * b).sum(axis=1)]
