"""The two kinds of backend a tier can use: a self-hosted worker pool and an external provider."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from ._price import MILLION, Price, usd

__all__ = ["Backend", "Provider", "WorkerPool"]

Name = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]+$", min_length=1, max_length=64)]
# Float bounds spelled as floats: typing caches Annotated[float, Meta(ge=0)] and Meta(ge=0.0) as one
# (they compare equal), and the committed JSON schemas must not depend on import order.
Positive = Annotated[float, Meta(gt=0.0)]
NonNegative = Annotated[float, Meta(ge=0.0)]
_SECONDS_PER_HOUR = Decimal(3600)


Url = Annotated[str, Meta(pattern=r"^https?://", max_length=2048)]


class WorkerPool(msgspec.Struct, frozen=True, kw_only=True, tag="pool"):
    """GPU workers that pull ``jobs.<name>``; priced from what the GPU costs and how fast it measured.

    A pool's workers run vLLM in-process, or front an OpenAI-compatible engine server (``engine_url``: SGLang,
    TGI, ``vllm serve``, llama.cpp) on the same GPUs; either way the pool keeps its price, spot flag and
    quantization. $/token comes from throughput, not from each job's engine seconds: jobs batched together share
    the GPU, so summing their engine time would bill one GPU-second many times over.
    """

    name: Name
    model: str
    """The model vLLM loads; fronting an engine server, the name the server serves it by."""
    engine_url: Url | None = None
    """An OpenAI-compatible server (``…/v1``) this pool's workers front; ``None``: vLLM in-process."""
    engine_api_key_env: str | None = None
    """Environment variable holding the engine server's API key, if it wants one."""
    continue_from_text: bool = True
    """Whether the engine server continues a preempted job's text (``continue_final_message``: vLLM, SGLang);
    off, such a job starts over on the next worker."""
    quantization: Literal["none", "fp8", "awq", "gptq", "gguf", "bitsandbytes"] = "none"
    gpu: str = "cpu"
    gpus: Annotated[int, Meta(ge=1, le=64)] = 1
    """GPUs one worker spans (its engine's tensor parallelism), for a model larger than one GPU."""
    spot: bool = False
    gpu_usd_per_hour: NonNegative
    """What one worker of this pool pays per hour, all its GPUs (the spot price for a spot pool)."""
    on_demand_usd_per_hour: NonNegative | None = None
    """List price of the same GPU on demand; defaults to ``gpu_usd_per_hour``. The spot lever's baseline."""
    prefill_tokens_per_s: Positive
    decode_tokens_per_s: Positive
    """Measured throughput of one worker at full batch (e.g. ``costwise-bench batching``)."""
    quantization_speedup: Annotated[float, Meta(ge=1.0)] = 1.0
    """Measured throughput of this quantized model over its unquantized original on the same GPU."""
    max_in_flight: Annotated[int, Meta(ge=1)] = 16

    def _price_at(self, usd_per_hour: Decimal) -> Price:
        per_token_second = usd_per_hour / _SECONDS_PER_HOUR * MILLION
        return Price(
            usd_per_m_input=per_token_second / usd(self.prefill_tokens_per_s),
            usd_per_m_output=per_token_second / usd(self.decode_tokens_per_s),
        )

    @property
    def price(self) -> Price:
        return self._price_at(usd(self.gpu_usd_per_hour))

    @property
    def on_demand_price(self) -> Price:
        """The same model and GPU, not on spot."""
        hourly = self.gpu_usd_per_hour if self.on_demand_usd_per_hour is None else self.on_demand_usd_per_hour
        return self._price_at(usd(hourly))

    @property
    def unquantized_price(self) -> Price:
        """On demand and unquantized: what this pool would cost without the spot and quantization levers."""
        return self.on_demand_price.scaled(usd(self.quantization_speedup))


class Provider(msgspec.Struct, frozen=True, kw_only=True, tag="provider"):
    """An external OpenAI-compatible API, called by a provider worker that pulls ``jobs.<name>``.

    Prices come from ``genai-prices`` (by ``provider_id`` + ``model``) unless given here; the catalog
    fills them in at load, so a model that library does not know must be priced explicitly.
    """

    name: Name
    model: str
    base_url: Url
    provider_id: str | None = None
    """genai-prices' id of the provider (``openai``, ``groq``, ``together``, …)."""
    usd_per_m_input: NonNegative | None = None
    usd_per_m_output: NonNegative | None = None
    api_key_env: str | None = None
    """Environment variable holding the API key (the key itself never sits in config)."""
    concurrency: Annotated[int, Meta(ge=1, le=1024)] = 8
    """Calls in flight at once per provider worker (the API's rate limit, shared fairly)."""
    tokens_per_s: Positive = 50.0
    """Typical output speed of one call: what the router assumes when checking a deadline."""
    timeout_s: Positive = 60.0
    max_retries: Annotated[int, Meta(ge=0, le=10)] = 2

    @property
    def price(self) -> Price:
        if self.usd_per_m_input is None or self.usd_per_m_output is None:
            raise ValueError(f"provider {self.name!r} has no price (the catalog fills it in at load)")
        return Price(usd_per_m_input=usd(self.usd_per_m_input), usd_per_m_output=usd(self.usd_per_m_output))

    @property
    def spot(self) -> bool:
        return False

    @property
    def on_demand_price(self) -> Price:
        return self.price

    @property
    def unquantized_price(self) -> Price:
        return self.price


Backend = WorkerPool | Provider
