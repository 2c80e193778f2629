"""The ONNX backend gives torch's vectors, the int8 one nearly them in a space of its own; concurrent calls
share model calls and spread over the workers."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from costwise.embed import DIMENSIONS, Backend, Embedder, Vector

# Different lengths in one batch: padding must not leak into the pooled vector, truncation must match torch's.
SENTENCES = [
    "How do I change the delivery address of my order?",
    "What is the capital of France?",
    "Can you pass a urine test for meth in 4 days?",
    "Why is the sky blue during the day but red at sunset, and does the same happen on Mars?",
    "ok",
    "a long question that goes on " * 60,  # past 256 tokens: both backends must cut at the same place
]


@pytest.fixture(scope="session")
def embedders() -> dict[Backend, Embedder]:
    """One embedder per backend for the session; the ONNX file is exported once into the model cache."""
    return {b: Embedder.load(threads=1, backend=b) for b in ("torch", "onnx", "onnx-int8")}


def _cosines(a: Vector, b: Vector) -> Vector:
    return np.asarray(np.sum(a * b, axis=1), dtype=np.float32)


def test_onnx_vectors_match_torch(embedders: dict[Backend, Embedder]) -> None:
    reference = embedders["torch"].embed_many(SENTENCES)
    batched = embedders["onnx"].embed_many(SENTENCES)
    one_by_one = np.stack([embedders["onnx"].embed_many([s])[0] for s in SENTENCES])
    assert batched.shape == (len(SENTENCES), DIMENSIONS) and batched.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    assert _cosines(reference, batched).min() >= 0.999
    assert _cosines(batched, one_by_one).min() >= 0.9999  # the padding in a batch changes nothing


def test_int8_vectors_are_close_but_live_in_a_space_of_their_own(embedders: dict[Backend, Embedder]) -> None:
    reference = embedders["onnx"].embed_many(SENTENCES)
    int8 = embedders["onnx-int8"].embed_many(SENTENCES)
    np.testing.assert_allclose(np.linalg.norm(int8, axis=1), 1.0, atol=1e-5)
    # Near, yet not the same vectors. The lowest is "ok" (two tokens: nothing to average the rounding out), and
    # it depends on the CPU's int8 kernels: 0.973 on the machine this was written on, 0.9697 on an AVX-512 VNNI
    # EPYC. Per-tensor weights, the broken variant, gave 0.915.
    assert 0.96 <= _cosines(reference, int8).min() < 0.9999
    assert embedders["torch"].space == embedders["onnx"].space != embedders["onnx-int8"].space


async def test_waiting_calls_are_split_between_the_workers(embedders: dict[Backend, Embedder]) -> None:
    onnx = embedders["onnx"]
    calls: list[tuple[str, int]] = []

    def encode(texts: list[str]) -> Vector:
        calls.append((threading.current_thread().name, len(texts)))
        time.sleep(0.05)  # both batches in flight at once
        return onnx.embed_many(texts)

    embedder = Embedder(encode, workers=2)
    texts = [f"question number {i}" for i in range(16)]
    vectors = await asyncio.gather(*(embedder.embed(t) for t in texts))
    embedder.close()
    assert sorted(n for _, n in calls) == [8, 8] and len({thread for thread, _ in calls}) == 2
    assert _cosines(np.stack(vectors), onnx.embed_many(texts)).min() >= 0.9999  # each caller got its own vector


async def test_concurrent_calls_are_batched(embedders: dict[Backend, Embedder]) -> None:
    onnx = embedders["onnx"]
    calls: list[int] = []

    def encode(texts: list[str]) -> Vector:
        calls.append(len(texts))
        return onnx.embed_many(texts)

    embedder = Embedder(encode, max_batch=4)
    texts = [f"question number {i}" for i in range(10)]
    vectors = await asyncio.gather(*(embedder.embed(t) for t in texts))
    embedder.close()
    assert sum(calls) == len(texts) and max(calls) <= 4 and len(calls) < len(texts)
    assert _cosines(np.stack(vectors), onnx.embed_many(texts)).min() >= 0.9999


async def test_each_embedding_is_charged_its_share_of_its_batchs_cpu() -> None:
    burnt: list[float] = []

    def encode(texts: list[str]) -> Vector:
        started = time.thread_time()
        while time.thread_time() - started < 0.02:  # CPU-bound, like a model call
            pass
        burnt.append(time.thread_time() - started)
        return np.ones((len(texts), DIMENSIONS), dtype=np.float32)

    embedder = Embedder(encode, max_batch=4)
    costed = await asyncio.gather(*(embedder.embed_costed(f"q{i}") for i in range(8)))
    embedder.close()
    shares = [cpu for _, cpu in costed]
    assert len(burnt) == 2 and sum(shares) == pytest.approx(sum(burnt), rel=0.1)
    assert max(shares) < min(burnt) / 2  # four shared each batch: nobody pays for all of it


async def test_a_failing_batch_reaches_every_waiter_and_the_next_call_works() -> None:
    failures = iter([RuntimeError("boom")])

    def encode(texts: list[str]) -> Vector:
        for exc in failures:
            raise exc
        return np.ones((len(texts), DIMENSIONS), dtype=np.float32)

    embedder = Embedder(encode)
    results = await asyncio.gather(embedder.embed("a"), embedder.embed("b"), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    assert (await embedder.embed("c")).shape == (DIMENSIONS,)
    embedder.close()


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown embedding backend"):
        Embedder.load(backend="tensorflow")  # type: ignore[arg-type]
