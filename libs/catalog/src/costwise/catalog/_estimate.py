"""A request's usage before it runs: what routing ranks by and what budget admission reserves."""

from __future__ import annotations

from costwise.contracts import InferenceRequest, Usage

__all__ = ["estimate_usage"]

_PER_MESSAGE_TOKENS = 4  # role markers of a chat template


def estimate_usage(request: InferenceRequest) -> Usage:
    """An upper bound: prompt tokens from its UTF-8 size (≥ 3 bytes per token for English-like text),
    completion at ``max_tokens`` (the most it may generate)."""
    prompt_bytes = sum(len(m.content.encode()) for m in request.messages)
    prompt = -(-prompt_bytes // 3) + _PER_MESSAGE_TOKENS * len(request.messages)
    return Usage(prompt_tokens=prompt, completion_tokens=request.sampling.max_tokens)
