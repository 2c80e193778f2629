from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from costwise.settings import process_id

__all__ = ["WorkerSettings"]


class WorkerSettings(msgspec.Struct, frozen=True, kw_only=True):
    """One worker of one pool, from ``COSTWISE_WORKER_*`` environment variables."""

    nats_url: str = "nats://127.0.0.1:4222"
    pool: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]+$", max_length=64)] = "default"
    model: str = "builtin:smollm2"
    """An HF model id or path, or ``builtin:tiny-llama`` / ``builtin:smollm2`` (prepared offline, cached); fronting
    an engine server, the name it serves the model by."""
    served_model_name: str | None = None
    """The model's name in completions (and, fronting an engine server, in its requests); default: ``model``."""
    engine_url: Annotated[str, Meta(pattern=r"^https?://", max_length=2048)] | None = None
    """An OpenAI-compatible engine server (``…/v1``: ``vllm serve``, SGLang, TGI, llama.cpp) this worker fronts
    instead of loading vLLM itself; the settings of the model (``quantization``, ``dtype``, …) are then the
    server's business."""
    engine_api_key_env: Annotated[str, Meta(max_length=128)] | None = None
    """Environment variable holding the engine server's API key (the key itself never sits in config)."""
    engine_timeout_s: Annotated[float, Meta(gt=0)] = 60.0
    """Longest wait for the engine server to connect, or between two chunks of its stream."""
    engine_retries: Annotated[int, Meta(ge=0, le=10)] = 3
    """Tries after the first when the engine server is unreachable, answers 5xx/429 or times out before it
    streamed anything; then the job goes back to the queue."""
    engine_max_response_bytes: Annotated[int, Meta(ge=1024)] = 16 << 20
    """Largest response (a whole event stream) read from the engine server."""
    continue_from_text: bool = True
    """A job handed back with a text checkpoint is continued from that text (``continue_final_message``, a
    vLLM/SGLang extension); off for a server that cannot, which then starts such jobs over."""
    quantization: Literal["none", "fp8", "awq", "gptq", "gguf", "bitsandbytes"] = "none"
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    max_model_len: Annotated[int, Meta(ge=64)] = 2048
    max_in_flight: Annotated[int, Meta(ge=1, le=1024)] = 16
    """Jobs kept inside the engine at once (continuous batching); more are pulled as slots free."""
    enforce_eager: bool = True
    """Skip graph capture/compilation: loads in seconds on CPU; turn off on GPUs for throughput."""
    kv_cache_gib: Annotated[int, Meta(ge=1)] = 1
    tensor_parallel_size: Annotated[int, Meta(ge=1, le=64)] = 1
    """GPUs one engine spans (vLLM tensor parallelism), for a model larger than one GPU; the worker's pod must
    be given as many (``nvidia.com/gpu``)."""
    ack_wait_s: Annotated[float, Meta(ge=1)] = 30.0
    heartbeat_s: Annotated[float, Meta(gt=0)] = 5.0
    """How often a running job tells JetStream it is alive; must be well under ack_wait_s."""
    max_deliver: Annotated[int, Meta(ge=1)] = 5
    grace_s: Annotated[float, Meta(ge=0)] = 5.0
    """On SIGTERM, how long running jobs may finish before they are checkpointed and handed back."""
    own_idle_s: Annotated[float, Meta(gt=0)] = 10.0
    """This worker's own queue (prefix affinity) is deleted by the server after this long without a pull or a
    running job from it; then the router's sweeper moves its queued jobs to the pool. A SIGKILLed worker's
    own jobs are therefore served elsewhere within about ack_wait_s + own_idle_s."""
    spot: bool = False
    worker_id: str = msgspec.field(default_factory=process_id)
    otlp_endpoint: str | None = None

    def __post_init__(self) -> None:
        if self.heartbeat_s >= self.ack_wait_s:
            raise ValueError(f"heartbeat_s ({self.heartbeat_s}) must be below ack_wait_s ({self.ack_wait_s})")
