"""Each tenant's online correction of the learned router, kept in the KV bucket ``ROUTER_HEADS`` so a restarted
or a second router continues from what the cascade taught instead of from the shipped weights.

Writes are debounced: a verdict marks its tenant, and a background task writes the marked tenants every
``flush_s`` (and once more at stop), so a busy tenant costs one write per interval, not one per verdict.
Last writer wins, on purpose: two routers learning for one tenant each hold a whole correction, and there is no
sound way to merge two SGD trajectories; the loser's last few steps (pulled toward zero anyway) are what is lost,
and both keep learning from there. A router reads a tenant's entry once, at its first request or verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import msgspec
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

__all__ = ["HeadStore", "StoredHead"]

log = logging.getLogger("costwise.router")


class StoredHead(msgspec.Struct, frozen=True, kw_only=True, tag="router_head.v1"):
    """One tenant's correction (msgpack: ~9 bytes a weight, ~4 kB a tenant)."""

    base: str
    """The shipped router it corrects (``OnlineRouter.base_id``): a new release starts its tenants afresh."""
    weights: list[float]
    bias: float


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(StoredHead)


class HeadStore:
    def __init__(self, kv: KeyValue, base: str, *, flush_s: float) -> None:
        self._kv = kv
        self._base = base
        self._flush_s = flush_s
        self._dirty: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def read(self, tenant: str) -> StoredHead | None:
        """``tenant``'s stored correction, or ``None`` (none yet, or one this router cannot use: it says why)."""
        try:
            entry = await self._kv.get(tenant)
        except KeyNotFoundError:
            return None
        try:
            head = _decoder.decode(entry.value or b"")
        except msgspec.DecodeError as exc:
            log.warning("ignoring the stored routing head of tenant %s: %s", tenant, exc)
            return None
        return head if head.base == self._base else None

    def changed(self, tenant: str) -> None:
        self._dirty.add(tenant)

    def start(self, heads: Callable[[str], tuple[list[float], float] | None]) -> None:
        self._task = asyncio.create_task(self._every(heads), name="router-heads")

    async def _every(self, heads: Callable[[str], tuple[list[float], float] | None]) -> None:
        while not self._stopping:  # not only cancelled: nats-py's KV put (asyncio.wait_for) can swallow a cancel
            await asyncio.sleep(self._flush_s)
            await self.flush(heads)

    async def flush(self, heads: Callable[[str], tuple[list[float], float] | None]) -> None:
        """Write every marked tenant's current correction; one that fails stays marked for the next round."""
        dirty, self._dirty = self._dirty, set()
        for tenant in dirty:
            head = heads(tenant)
            if head is None:  # evicted from this router's memory since: nothing newer to say
                continue
            try:
                await self._kv.put(tenant, _encoder.encode(StoredHead(base=self._base, weights=head[0], bias=head[1])))
            except Exception:
                log.warning("could not store the routing head of tenant %s", tenant, exc_info=True)
                self._dirty.add(tenant)

    async def stop(self, heads: Callable[[str], tuple[list[float], float] | None]) -> None:
        self._stopping = True
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush(heads)
