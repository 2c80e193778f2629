from decimal import Decimal
from pathlib import Path

import pytest

from costwise.catalog import CatalogError, Provider, WorkerPool, default_catalog, load_catalog
from costwise.contracts import Usage

EXAMPLE = Path(__file__).parents[3] / "deploy" / "catalog.example.toml"


def test_example_catalog_loads_with_provider_prices_from_genai_prices() -> None:
    catalog = load_catalog(EXAMPLE)
    openai = catalog.backend("openai-4o")
    assert isinstance(openai, Provider)
    assert openai.price.usd_per_m_input > 0 and openai.price.usd_per_m_output > openai.price.usd_per_m_input
    assert catalog.tier("gpt-4o").name == "large"
    assert catalog.next_tier("small") == catalog.tier("large")
    assert catalog.next_tier("large") is None


def test_pool_price_derives_from_gpu_hour_and_throughput_exactly() -> None:
    pool = WorkerPool(
        name="p",
        model="m",
        gpu_usd_per_hour=3.6,
        prefill_tokens_per_s=10_000,
        decode_tokens_per_s=1_000,
        spot=True,
        on_demand_usd_per_hour=7.2,
        quantization_speedup=1.5,
    )
    # $3.6/h = $0.001/s; at 1,000 tokens/s that is $1 per million output tokens.
    assert pool.price.usd_per_m_output == Decimal(1)
    assert pool.price.usd_per_m_input == Decimal("0.1")
    assert pool.on_demand_price.usd_per_m_output == Decimal(2)
    assert pool.unquantized_price.usd_per_m_output == Decimal(3)
    usage = Usage(prompt_tokens=1_000, completion_tokens=500)
    assert pool.price.cost(usage) == Decimal("0.0006")


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            'baseline = "x"\n[[tiers]]\nname = "t"\nbackends = ["nope"]\n'
            + "[[backends]]\ntype='pool'\nname='x'\nmodel='m'\ngpu_usd_per_hour=1\nprefill_tokens_per_s=1\ndecode_tokens_per_s=1\n",
            "unknown backends",
        ),
        (
            'baseline = "x"\n[[tiers]]\nname = "t"\nbackends = []\n'
            + "[[backends]]\ntype='pool'\nname='x'\nmodel='m'\ngpu_usd_per_hour=1\nprefill_tokens_per_s=1\ndecode_tokens_per_s=1\n",
            "length >= 1",
        ),
        (
            'baseline = "x"\n[[tiers]]\nname = "t"\nbackends = ["x"]\n'
            + "[[backends]]\ntype='pool'\nname='x'\nmodel='m'\ngpu_usd_per_hour=-1\nprefill_tokens_per_s=1\ndecode_tokens_per_s=1\n",
            ">= 0",
        ),
        (
            'baseline = "x"\n[aliases]\nbig="huge"\n[[tiers]]\nname = "t"\nbackends = ["x"]\n'
            + "[[backends]]\ntype='pool'\nname='x'\nmodel='m'\ngpu_usd_per_hour=1\nprefill_tokens_per_s=1\ndecode_tokens_per_s=1\n",
            "unknown tier",
        ),
        (
            'baseline = "x"\n[[tiers]]\nname = "t"\nbackends = ["x"]\n'
            + "[[backends]]\ntype='provider'\nname='x'\nmodel='no-such-model-anywhere'\nbase_url='http://x'\n",
            "set usd_per_m_input",
        ),
        (
            'baseline = "x"\n[[tiers]]\nname = "t"\nbackends = ["x"]\n'
            + "[[backends]]\ntype='pool'\nname='x'\nmodel='m'\nengine_url='grpc://gpu-1:8000'\n"
            + "gpu_usd_per_hour=1\nprefill_tokens_per_s=1\ndecode_tokens_per_s=1\n",
            "engine_url",
        ),
    ],
)
def test_bad_catalog_fails_at_load_with_a_clear_message(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text(toml)
    with pytest.raises(CatalogError, match=message):
        load_catalog(path)


def test_default_catalog_serves_the_embedded_pool() -> None:
    catalog = default_catalog()
    assert catalog.tier("small").backends == ["default"]
    assert catalog.baseline_price.cost(Usage(completion_tokens=1)) > 0


def test_a_pool_fronting_an_engine_server_keeps_its_spot_and_quantization_levers(tmp_path: Path) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text(
        'baseline = "sglang"\n[[tiers]]\nname = "small"\nbackends = ["sglang"]\n'
        "[[backends]]\ntype = 'pool'\nname = 'sglang'\nmodel = 'Qwen/Qwen2.5-7B-Instruct-AWQ'\n"
        "engine_url = 'http://gpu-1:30000/v1'\ncontinue_from_text = false\nquantization = 'awq'\nspot = true\n"
        "gpu_usd_per_hour = 0.3\non_demand_usd_per_hour = 0.9\nquantization_speedup = 1.5\n"
        "prefill_tokens_per_s = 10000\ndecode_tokens_per_s = 1000\n"
    )
    pool = load_catalog(path).backend("sglang")
    assert isinstance(pool, WorkerPool) and pool.engine_url == "http://gpu-1:30000/v1" and not pool.continue_from_text
    # $0.9/h on demand at 1,000 tokens/s = $0.25 per million output tokens; unquantized 1.5 times that.
    assert pool.price.usd_per_m_output < pool.on_demand_price.usd_per_m_output == Decimal("0.25")
    assert pool.unquantized_price.usd_per_m_output == Decimal("0.375")
    assert (
        WorkerPool(name="p", model="m", gpu_usd_per_hour=1, prefill_tokens_per_s=1, decode_tokens_per_s=1).engine_url
        is None
    )
