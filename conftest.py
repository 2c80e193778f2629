"""Session-wide fixtures shared by service and cross-service tests (one engine, one server per session)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio

pytest_plugins = ["costwise.testing.plugin"]

TINY_MAX_MODEL_LEN = 2048
# float32, not the checkpoint's bfloat16: a generation resumed from a checkpoint (its tokens prefilled at once) is
# then token for token the uninterrupted one, which bfloat16's rounding breaks at the random model's near-ties
# (measured: 1,500 greedy tokens resumed at 20, 57, 200 and 600 tokens all equal in float32; in bfloat16 three of
# the four diverged). Worker processes a test compares with this engine run in float32 too.
TINY_DTYPE = "float32"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The tiny random Llama, built by the project's own code (cached across sessions)."""
    from costwise.models import tiny_llama

    yield str(tiny_llama())


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def engine(tiny_model: str) -> AsyncIterator[Any]:
    """One real vLLM engine (tiny Llama) shared by every test that needs generation."""
    from costwise.worker import Engine, WorkerSettings

    settings = WorkerSettings(
        model=tiny_model, served_model_name="tiny-llama", max_model_len=TINY_MAX_MODEL_LEN, dtype=TINY_DTYPE
    )
    eng = await asyncio.to_thread(Engine.load, settings)
    await eng.warm_up()
    yield eng
    eng.shutdown()


@pytest.fixture(scope="session")
def semantic_models() -> Any:
    """The semantic cache's models (MiniLM embedder, hit verifier), loaded once for the whole session."""
    from costwise.cache.verify import Verifier
    from costwise.embed import Embedder

    return Embedder.load(threads=1), Verifier.load(threads=1)


@pytest.fixture
def semantic_cache(semantic_models: Any, tmp_path: Any) -> Any:
    """A semantic cache on the session's models with a fresh on-disk index of its own."""
    from costwise.cache import EdgeIndex, SemanticCache

    embedder, verifier = semantic_models
    return SemanticCache(embedder, EdgeIndex.open(tmp_path / "semantic"), verifier)
