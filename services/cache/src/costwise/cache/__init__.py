"""The cache service: answers a request it has seen before, forwards the rest to the router."""

from .app import Cache, build
from .keys import exact_key, is_cacheable
from .settings import CacheSettings

__all__ = ["Cache", "CacheSettings", "build", "exact_key", "is_cacheable"]
