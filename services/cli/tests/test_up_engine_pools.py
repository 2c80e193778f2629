"""``costwise up`` on a catalog whose pools front engine servers: one worker per such pool, told where its server is."""

from __future__ import annotations

from pathlib import Path

from costwise.catalog import Catalog, Tier, WorkerPool
from costwise.cli._up import _services


def _pool(name: str, **kw: object) -> WorkerPool:
    prices = {"gpu_usd_per_hour": 1.0, "prefill_tokens_per_s": 1000.0, "decode_tokens_per_s": 100.0}
    return WorkerPool(name=name, **prices, **kw)  # type: ignore[arg-type]


def test_a_pool_with_an_engine_url_gets_a_worker_fronting_it(tmp_path: Path) -> None:
    pools = [
        _pool("sglang", model="Qwen/Qwen2.5-7B-Instruct-AWQ", engine_url="http://gpu-1:30000/v1", spot=True),
        _pool("tgi", model="tgi", engine_url="http://gpu-2:8080/v1", continue_from_text=False, engine_api_key_env="K"),
        _pool("elsewhere", model="Qwen/Qwen2.5-72B-Instruct"),  # no server, no local model: not started here
    ]
    catalog = Catalog(tiers=[Tier(name="t", backends=[p.name for p in pools])], backends=pools, baseline="sglang")
    env = {"COSTWISE_WORKER_NATS_URL": "nats://127.0.0.1:4222"}
    workers = {s.name: s.env for s in _services(catalog, env, tmp_path) if s.name.startswith("worker-")}
    assert set(workers) == {"worker-sglang", "worker-tgi"}
    sglang, tgi = workers["worker-sglang"], workers["worker-tgi"]
    assert sglang["COSTWISE_WORKER_ENGINE_URL"] == "http://gpu-1:30000/v1" and sglang["COSTWISE_WORKER_SPOT"] == "true"
    assert (
        sglang["COSTWISE_WORKER_MODEL"] == "Qwen/Qwen2.5-7B-Instruct-AWQ" and sglang["COSTWISE_WORKER_POOL"] == "sglang"
    )
    assert sglang["COSTWISE_WORKER_CONTINUE_FROM_TEXT"] == "true" and "COSTWISE_WORKER_ENGINE_API_KEY_ENV" not in sglang
    assert tgi["COSTWISE_WORKER_CONTINUE_FROM_TEXT"] == "false" and tgi["COSTWISE_WORKER_ENGINE_API_KEY_ENV"] == "K"
    assert (
        sglang["COSTWISE_WORKER_MAX_IN_FLIGHT"] == "16"
        and sglang["COSTWISE_WORKER_NATS_URL"] == env["COSTWISE_WORKER_NATS_URL"]
    )


def test_the_settings_it_passes_load_into_a_worker_fronting_the_server(tmp_path: Path) -> None:
    from costwise.settings import load
    from costwise.worker import WorkerSettings

    pool = _pool("vllm-serve", model="served", engine_url="http://gpu-1:8000/v1", continue_from_text=False)
    catalog = Catalog(tiers=[Tier(name="t", backends=[pool.name])], backends=[pool], baseline=pool.name)
    (spec,) = [s for s in _services(catalog, {}, tmp_path) if s.name == "worker-vllm-serve"]
    settings = load(WorkerSettings, "COSTWISE_WORKER_", spec.env)
    assert settings.engine_url == "http://gpu-1:8000/v1" and settings.model == "served"
    assert settings.continue_from_text is False and settings.pool == "vllm-serve"


def test_an_in_process_pool_gets_its_model_and_gpus_from_the_catalog(tmp_path: Path) -> None:
    """Not its quantization: the catalog's describes the model for pricing (the built-in SmolLM2 is "gguf" there,
    a GGUF file costwise dequantizes before vLLM loads it)."""
    from costwise.settings import load
    from costwise.worker import WorkerSettings

    pool = _pool("big", model="builtin:smollm2", quantization="gguf", gpus=4)
    catalog = Catalog(tiers=[Tier(name="t", backends=[pool.name])], backends=[pool], baseline=pool.name)
    (spec,) = [s for s in _services(catalog, {}, tmp_path) if s.name == "worker-big"]
    settings = load(WorkerSettings, "COSTWISE_WORKER_", spec.env)
    assert (settings.model, settings.quantization, settings.tensor_parallel_size) == ("builtin:smollm2", "none", 4)
    assert settings.engine_url is None
