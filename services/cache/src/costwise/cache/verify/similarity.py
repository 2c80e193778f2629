"""Cosine similarity of question pairs under the cache's own embedder (all-MiniLM-L6-v2), for offline runs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .model import base_model_path

__all__ = ["cosine_similarities"]


def cosine_similarities(pairs: Sequence[tuple[str, str]], *, batch_size: int = 128) -> list[float]:
    """Cosine of each pair's normalised sentence embeddings, as the cache's Qdrant search would see it."""
    from sentence_transformers import SentenceTransformer  # heavy import, only offline tools need it

    model = SentenceTransformer(str(base_model_path()), device="cpu")
    texts = sorted({t for pair in pairs for t in pair})  # embed each distinct question once
    vectors = model.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
    row = {t: i for i, t in enumerate(texts)}
    a = np.asarray(vectors)[[row[x] for x, _ in pairs]]
    b = np.asarray(vectors)[[row[y] for _, y in pairs]]
    return [float(c) for c in (a * b).sum(axis=1)]
