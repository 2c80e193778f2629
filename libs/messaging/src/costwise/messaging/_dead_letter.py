"""Giving up on a message without losing it: dead letter + typed error result, then terminate."""

from __future__ import annotations

import logging
import re
import time
from typing import Any, NamedTuple

import msgspec
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from costwise.contracts import DeadLetter, ErrorCode, ErrorInfo, Result, now_ms, subjects

from ._publish import publish

__all__ = ["file_dead_letter", "give_up", "send_error_result"]

log = logging.getLogger("costwise.messaging")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # contracts.Token


class _Peeked(NamedTuple):
    request_id: str | None = None
    tenant: str | None = None
    callback_url: str | None = None
    api_key_id: str | None = None


def _peek(data: bytes) -> _Peeked:
    """Best-effort request id, tenant, callback URL and API key id from a payload that failed to decode."""
    try:
        # Invalid UTF-8 somewhere in a prompt must not hide the request id from the caller's error result.
        doc: Any = msgspec.json.decode(data.decode("utf-8", errors="replace"))
    except msgspec.DecodeError:
        return _Peeked()
    # Requests carry the fields at the top, jobs under "request", completions under "job"."request".
    for path in ((), ("request",), ("job", "request")):
        node = doc
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get("request_id"), str):
            text = {k: v if isinstance(v := node.get(k), str) else None for k in _Peeked._fields}
            return _Peeked(**text)
    return _Peeked()


def _valid(token: str | None) -> str | None:
    return token if token is not None and _TOKEN.match(token) else None


async def send_error_result(
    js: JetStreamContext,
    *,
    request_id: str,
    tenant: str,
    code: ErrorCode,
    message: str,
    callback_url: str | None = None,
    api_key_id: str | None = None,
) -> None:
    """Answer a request with a typed error, through the same subject a success would take."""
    result = Result(
        request_id=request_id,
        tenant=tenant,
        status="error",
        error=ErrorInfo(code=code, message=message),
        callback_url=callback_url,
        completed_ms=now_ms(),
        api_key_id=api_key_id,
    )
    await publish(js, subjects.results(tenant, request_id), result, msg_id=subjects.dedup_id(tenant, request_id))


async def give_up(
    js: JetStreamContext,
    msg: Msg,
    *,
    service: str,
    code: ErrorCode,
    reason: str,
    tenant_hint: str | None = None,
    reply: bool = True,
) -> None:
    """File ``msg`` as a dead letter, tell its caller (when it can be addressed), then terminate it.

    Order matters: the dead letter and the error result are stored before ``term()``, so a crash in
    between redelivers the message instead of losing it. ``tenant_hint`` is the tenant token of the
    message's subject: the authority on whom to answer (see :func:`file_dead_letter`).
    """
    delivered, seq = _metadata(msg)
    await file_dead_letter(
        js,
        service=service,
        subject=msg.subject,
        data=msg.data,
        code=code,
        reason=reason,
        num_delivered=delivered,
        stream_seq=seq,
        tenant_hint=tenant_hint,
        reply=reply,
    )
    await msg.term()


async def file_dead_letter(
    js: JetStreamContext,
    *,
    service: str,
    subject: str,
    data: bytes,
    code: ErrorCode,
    reason: str,
    num_delivered: int = 0,
    stream_seq: int | None = None,
    tenant_hint: str | None = None,
    reply: bool = True,
) -> None:
    """Store a dead letter for ``data`` (from ``subject``) and send its caller a typed error result.

    ``reply=False`` files the letter only: for events that are not requests (billing's usage events and
    results), where an error result would overwrite the caller's real answer. ``tenant_hint``, the tenant
    of the subject, wins over the payload's: a payload forging another tenant must not put an error result
    among that tenant's results.
    """
    peeked = _peek(data)
    request_id, tenant = _valid(peeked.request_id), _valid(tenant_hint) or _valid(peeked.tenant)
    letter = DeadLetter(
        service=service,
        subject=subject,
        code=code,
        reason=reason[:2000],
        payload=data,
        num_delivered=num_delivered,
        stream_seq=stream_seq,
        request_id=request_id,
        tenant=tenant,
        ts_ms=now_ms(),
    )
    seq = stream_seq if stream_seq is not None else time.time_ns()
    await publish(js, subjects.dead_letters(service), letter, msg_id=f"{service}-{subject}-{seq}")
    if reply and request_id and tenant:
        await send_error_result(
            js,
            request_id=request_id,
            tenant=tenant,
            code=code,
            message=reason,
            callback_url=peeked.callback_url,
            # Carried on so billing closes the key budget's reservation too.
            api_key_id=peeked.api_key_id if peeked.api_key_id and _KEY_ID.match(peeked.api_key_id) else None,
        )
    log.warning("dead-lettered %s from %s: %s (%s)", request_id or "?", subject, code.value, reason)


def _metadata(msg: Msg) -> tuple[int, int | None]:
    try:
        meta = msg.metadata
    except Exception:  # a core (non-JetStream) message has no metadata
        return 0, None
    return meta.num_delivered, meta.sequence.stream
