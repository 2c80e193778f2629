"""The gateway's notes of the requests it queued (the ``GATEWAY_REQUESTS`` bucket): so a poll can say "queued"
rather than "unknown", and an Idempotency-Key sent again with another body is refused."""

from __future__ import annotations

import msgspec
from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from costwise.contracts import InferenceRequest

from ._mapping import fingerprint
from .errors import idempotency_key_reused

__all__ = ["Accepted", "Notes"]


class Accepted(msgspec.Struct, frozen=True, kw_only=True, tag="gateway_request.v1", tag_field="type"):
    """The gateway's note that it queued a request, and with what body."""

    created_ms: int
    fingerprint: str | None = None
    """The request's :func:`~costwise.gateway._mapping.fingerprint` (``None`` in notes older than it)."""


class Notes:
    """One note per queued request, keyed per tenant like the request ids themselves (two tenants may use the
    same Idempotency-Key)."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def claim(self, request: InferenceRequest) -> bool:
        """Note ``request`` as accepted, with its fingerprint: ``True`` if this call did; ``False`` if its id was
        noted before with the same body (a replay); 422 if with another body."""
        mine = fingerprint(request)
        note = Accepted(created_ms=request.created_ms, fingerprint=mine)
        try:  # create, not put: of two concurrent first uses of a key, one notes its body and the other compares
            await self._kv.create(_key(request.tenant, request.request_id), msgspec.json.encode(note))
            return True
        except KeyWrongLastSequenceError:
            pass
        stored = await self.get(request.tenant, request.request_id)
        if stored is not None and stored.fingerprint not in (None, mine):
            raise idempotency_key_reused(request.request_id)
        return False

    async def release(self, request: InferenceRequest) -> None:
        """Forget a claim whose request was never queued: its key is free again, for any body."""
        await self._kv.delete(_key(request.tenant, request.request_id))

    async def remember(self, request: InferenceRequest) -> None:
        note = Accepted(created_ms=request.created_ms, fingerprint=fingerprint(request))
        await self._kv.put(_key(request.tenant, request.request_id), msgspec.json.encode(note))

    async def get(self, tenant: str, request_id: str) -> Accepted | None:
        try:
            entry = await self._kv.get(_key(tenant, request_id))
        except (KeyNotFoundError, KeyDeletedError):
            return None
        return msgspec.json.decode(entry.value, type=Accepted) if entry.value else None


def _key(tenant: str, request_id: str) -> str:
    return f"{tenant}.{request_id}"
