"""Map model specs from settings to something ``vllm.LLM(model=...)`` accepts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ._smollm2 import smollm2
from ._tiny import tiny_llama

BUILTINS: dict[str, Callable[[Path | None], Path]] = {
    "builtin:tiny-llama": tiny_llama,
    "builtin:smollm2": smollm2,
}


def resolve(spec: str, cache_dir: Path | None = None) -> Path | str:
    """Turn a model spec into a local directory or pass it through.

    ``builtin:tiny-llama`` and ``builtin:smollm2`` are built (once, cached) and their directory is
    returned. Any other spec, such as a Hugging Face model id or a filesystem path, is returned
    unchanged for vLLM to interpret.
    """
    builder = BUILTINS.get(spec)
    if builder is None:
        return spec
    return builder(cache_dir)


def run_dtype(spec: str, asked: str = "auto") -> str:
    """The dtype to run ``spec`` in when its pool asked for ``asked``: as asked, except that a built-in model on
    ``auto`` runs in float32. They are tiny (a float32 upcast of the stored bfloat16 weights is lossless and
    cheap), and bfloat16 compute is not the same on every CPU: on a host with AMX bfloat16 kernels SmolLM2's greedy
    answer to "What is the capital of France?" turned from "The capital of France is Paris." into a loop of
    "la femme au martyre", which float32 and float16 did not."""
    return "float32" if asked == "auto" and spec in BUILTINS else asked
