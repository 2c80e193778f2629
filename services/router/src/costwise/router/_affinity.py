"""Prefix affinity: requests that share a prefix go where that prefix's KV cache is already warm."""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import msgspec

from costwise.contracts import InferenceRequest

__all__ = ["Affinity", "prefix_hash"]

_encoder = msgspec.json.Encoder()


def prefix_hash(req: InferenceRequest) -> str | None:
    """Hash of everything before the last message (system prompt, few-shot examples, earlier turns).

    ``None`` for a lone message. Affinity only ever picks among one tier's backends, so the model need not be in it.
    """
    if len(req.messages) < 2:
        return None
    digest = hashlib.blake2b(_encoder.encode(req.messages[:-1]), digest_size=16)
    return digest.hexdigest()


class Affinity:
    """Which backend, and which worker of it, last served each prefix (bounded LRU; per router process, a hint,
    not a rule: a lost entry costs a cold prefix cache, never a request)."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._last: OrderedDict[str, tuple[str, str]] = OrderedDict()

    def preferred(self, prefix: str | None) -> str | None:
        last = self._last.get(prefix) if prefix else None
        return last[0] if last else None

    def worker(self, prefix: str | None, backend: str) -> str | None:
        """The worker of ``backend`` that served ``prefix`` last, if it was one of that backend's."""
        last = self._last.get(prefix) if prefix else None
        return last[1] if last and last[0] == backend and last[1] else None

    def served(self, prefix: str | None, backend: str, worker: str) -> None:
        """Record a successful answer (a failed attempt proves nothing about a warm cache)."""
        if not prefix or not self._capacity:
            return
        self._last[prefix] = (backend, worker)
        self._last.move_to_end(prefix)
        if len(self._last) > self._capacity:
            self._last.popitem(last=False)
