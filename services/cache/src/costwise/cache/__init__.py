"""The cache service: answers a request it has seen before, forwards the rest to the router."""

from ._qdrant import QdrantIndex
from ._semantic import Probe, SemanticCache
from ._store import CachedAnswer
from ._vectors import EdgeIndex, VectorIndex
from .app import Cache, build, load_semantic
from .keys import exact_key, is_cacheable, semantic_scope
from .settings import CacheSettings

__all__ = [
    "Cache",
    "CacheSettings",
    "CachedAnswer",
    "EdgeIndex",
    "Probe",
    "QdrantIndex",
    "SemanticCache",
    "VectorIndex",
    "build",
    "exact_key",
    "is_cacheable",
    "load_semantic",
    "semantic_scope",
]
