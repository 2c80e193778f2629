"""Model preparation for offline vLLM: tiny test models, GGUF conversion, spec resolution."""

from ._cache import default_cache_dir
from ._resolve import resolve, run_dtype
from ._smollm2 import smollm2
from ._tiny import tiny_llama

__all__ = ["default_cache_dir", "resolve", "run_dtype", "smollm2", "tiny_llama"]
