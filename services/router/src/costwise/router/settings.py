from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

__all__ = ["RouterSettings"]


class RouterSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Router configuration, from ``COSTWISE_ROUTER_*`` environment variables."""

    nats_url: str = "nats://127.0.0.1:4222"
    catalog: str | None = None
    """Path of the catalog TOML (tiers, backends, prices; see deploy/catalog.example.toml). Unset: one local pool."""
    concurrency: Annotated[int, Meta(ge=1, le=1024)] = 16
    """Messages of each consumer handled at once (each handler waits for its publish's PubAck); the router
    pulls exactly as many as it has free."""
    capacity_refresh_s: Annotated[float, Meta(gt=0, le=60)] = 0.25
    """How often each backend's queue (backlog, in flight, idle workers) is read; routing reads the last reading."""
    quality_floor: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.55
    """Default cascade floor: a small-tier answer whose confidence (geometric-mean token probability) is
    below it is escalated. A request's ``quality_floor`` overrides it."""
    min_token_logprob: float = -12.0
    """An answer with any token less likely than this is escalated (one wildly unsure token, e.g. a made-up number)."""
    learned: bool = True
    """With two or more tiers, ``auto`` requests the learned router doubts the small tier can answer go
    straight to the next tier (loads MiniLM in the router); off: every ``auto`` request starts small."""
    embed_backend: Literal["onnx", "torch"] = "onnx"
    """How the learned router runs MiniLM (same vectors either way; ONNX Runtime takes ~2.4 times less per request)."""
    route_quality: Annotated[float, Meta(ge=0.5, le=0.999)] = 0.95
    """Share of the large tier's quality the learned router's threshold is calibrated to keep."""
    heads_flush_s: Annotated[float, Meta(gt=0, le=3600)] = 5.0
    """How often the tenants' online corrections learned since the last write are stored (KV ROUTER_HEADS)."""
    response_verifier: bool = True
    """Also ask the learned response verifier before accepting a small-tier answer, for prompts like those it was
    trained on (GSM8K-style math word problems: ``learned/domain.py``); elsewhere only the rule checks judge."""
    verifier_direct_below: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    """Where the response verifier judges the small answer: a prompt skips the small tier only when P(small OK) is
    below this. Unset: the value chosen with the shipped verifier (its artifact's ``direct_below``)."""
    verifier_escalate_below: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    """A small answer the response verifier scores below this is escalated. Unset: the shipped verifier's
    calibrated threshold."""
    affinity_entries: Annotated[int, Meta(ge=0)] = 10_000
    """Prefix hashes remembered for affinity (which backend and worker served a prefix last)."""
    affinity_burst: Annotated[int, Meta(ge=0, le=1024)] = 4
    """Jobs this router sends to one worker's own queue per capacity reading (the reading said it was pulling;
    more than its free slots would wait there). 0 turns worker-level affinity off."""
    otlp_endpoint: str | None = None
