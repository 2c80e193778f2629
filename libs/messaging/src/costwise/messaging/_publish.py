from __future__ import annotations

import msgspec
from nats.js import JetStreamContext
from nats.js.api import PubAck

from costwise.contracts import encode
from costwise.telemetry import inject

__all__ = ["MSG_ID", "publish"]

MSG_ID = "Nats-Msg-Id"


async def publish(
    js: JetStreamContext,
    subject: str,
    message: msgspec.Struct | bytes,
    *,
    msg_id: str,
    timeout: float = 5.0,
) -> PubAck:
    """Publish ``message`` durably (waits for the stream's ack) with ``Nats-Msg-Id`` dedup and trace context.

    Publishing the same ``msg_id`` again within the stream's duplicate window stores nothing and returns
    an ack with ``duplicate=True``: that is what makes every hop's retry safe. ``message`` may be
    already-encoded JSON (a caller that validated it need not encode it twice).
    """
    headers = inject({MSG_ID: msg_id})
    data = message if isinstance(message, bytes) else encode(message)
    return await js.publish(subject, data, headers=headers, timeout=timeout)
