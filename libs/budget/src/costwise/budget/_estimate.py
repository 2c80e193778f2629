"""A request's cost before it runs: what an admission reserves."""

from __future__ import annotations

from decimal import Decimal

from costwise.catalog import Price
from costwise.contracts import InferenceRequest, Usage

__all__ = ["estimate_usd"]

_PER_MESSAGE_TOKENS = 4  # role markers of a chat template


def estimate_usd(price: Price, request: InferenceRequest) -> Decimal:
    """``request`` at ``price``: prompt tokens bounded from its UTF-8 size (≥ 3 bytes per token for
    English-like text), completion at ``max_tokens`` (the most it may generate)."""
    prompt_bytes = sum(len(m.content.encode()) for m in request.messages)
    prompt = -(-prompt_bytes // 3) + _PER_MESSAGE_TOKENS * len(request.messages)
    return price.cost(Usage(prompt_tokens=prompt, completion_tokens=request.sampling.max_tokens))
