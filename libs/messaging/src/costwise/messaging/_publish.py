from __future__ import annotations

import asyncio

import msgspec
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import NoStreamResponseError, ServiceUnavailableError

from costwise.contracts import encode
from costwise.telemetry import inject

__all__ = ["ELECTION_WAIT_S", "MSG_ID", "bus_unavailable", "publish"]

MSG_ID = "Nats-Msg-Id"
# A stream with no leader answers nothing (no responders, or no PubAck in time) until the survivors elect one: the
# Raft election timeout is 4-9 s. The same msg-id makes a retry safe, so a publish waits out an election.
_ELECTION = (NoRespondersError, NoStreamResponseError, NatsTimeoutError, ServiceUnavailableError)
ELECTION_WAIT_S = 20.0


def bus_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is JetStream not answering for now, e.g. while a stream elects a leader."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, _ELECTION):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def publish(
    js: JetStreamContext,
    subject: str,
    message: msgspec.Struct | bytes,
    *,
    msg_id: str,
    timeout: float = 5.0,
    patience_s: float = ELECTION_WAIT_S,
) -> PubAck:
    """Publish ``message`` durably (waits for the stream's ack) with ``Nats-Msg-Id`` dedup and trace context.

    Publishing the same ``msg_id`` again within the stream's duplicate window stores nothing and returns
    an ack with ``duplicate=True``: that is what makes every hop's retry safe. ``message`` may be
    already-encoded JSON (a caller that validated it need not encode it twice). A stream electing a new
    leader (a node died) is waited out for up to ``patience_s``: a handler that raised instead would burn its
    message's deliveries (5, with backoff: about 3 s) long before the election ends, and the message is lost.
    """
    headers = inject({MSG_ID: msg_id})
    data = message if isinstance(message, bytes) else encode(message)
    deadline = asyncio.get_running_loop().time() + patience_s
    while True:
        try:
            return await js.publish(subject, data, headers=headers, timeout=timeout)
        except _ELECTION:
            if asyncio.get_running_loop().time() >= deadline:
                raise
        # Once a stream failed to answer, ask again soon and often: the new leader answers within milliseconds.
        timeout = min(timeout, 1.0)
        await asyncio.sleep(0.25)
