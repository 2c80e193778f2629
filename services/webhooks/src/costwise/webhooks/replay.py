"""Re-send results to their callbacks: one request's, or every dead-lettered one of a tenant.

Replays go through the tenant's outbox like any result (signed, retried, ordered behind what is
already queued), with the same ``webhook-id`` as the original attempts.
"""

from __future__ import annotations

import time

from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

from costwise.contracts import DeadLetter, Result, decode, subjects
from costwise.contracts.subjects import RESULTS
from costwise.messaging import ensure_consumer, publish

__all__ = ["replay"]


async def replay(
    js: JetStreamContext, tenant: str, request_id: str | None = None, *, ack_wait_s: float = 60.0
) -> list[str]:
    """Queue the results to re-send; returns their request ids (raises LookupError when there is none)."""
    payloads = await _stored_result(js, tenant, request_id) if request_id else await _dead_lettered(js, tenant)
    if not payloads:
        raise LookupError(
            f"nothing to replay for tenant {tenant!r}" + (f", request {request_id!r}" if request_id else "")
        )
    await ensure_consumer(js, subjects.webhooks_tenant(tenant, ack_wait_s=ack_wait_s))
    stamp = str(time.time_ns())
    for rid, payload in payloads.items():
        await publish(js, subjects.webhooks(tenant), payload, msg_id=subjects.dedup_id(tenant, rid, "replay", stamp))
    return list(payloads)


async def _stored_result(js: JetStreamContext, tenant: str, request_id: str) -> dict[str, bytes]:
    try:
        stored = await js.get_last_msg(RESULTS.name, subjects.results(tenant, request_id))
    except NotFoundError:
        return {rid: data for rid, data in (await _dead_lettered(js, tenant)).items() if rid == request_id}
    if stored.data is None or decode(stored.data, Result).callback_url is None:
        raise LookupError(f"the result of {tenant}/{request_id} has no callback URL")
    return {request_id: stored.data}


async def _dead_lettered(js: JetStreamContext, tenant: str) -> dict[str, bytes]:
    """Request id → result payload of every webhooks dead letter of ``tenant``, in the order they failed."""
    sub = await js.subscribe(
        subjects.webhook_dead_letters(tenant), ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
    )
    found: dict[str, bytes] = {}
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except TimeoutError:  # nats-py raises its own or, on a late "no messages", asyncio's
                return found
            letter = decode(msg.data, DeadLetter)
            if letter.request_id:  # a request dead-lettered again after a replay is sent once, in its first place
                found.setdefault(letter.request_id, letter.payload)
            if msg.metadata.num_pending == 0:
                return found
    finally:
        await sub.unsubscribe()
