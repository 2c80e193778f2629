"""Sentence embeddings (all-MiniLM-L6-v2, shipped in a wheel) for every service that compares texts."""

from ._embedder import DIMENSIONS, Backend, Embedder, Vector, space_of

__all__ = ["DIMENSIONS", "Backend", "Embedder", "Vector", "space_of"]
