"""Move the messages stored on one subject of a stream to another subject, losing none."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from ._publish import MSG_ID

__all__ = ["requeue"]

# Another mover (a router's sweep, the worker's own hand-back) deleted it first, or its consumer took it off a
# work queue: "no message found" from a get, "sequence not found" from a delete.
_GONE = {10057, 10043}


async def requeue(js: JetStreamContext, stream: str, subject: str, to_subject: str) -> int:
    """Republish every message stored on ``subject`` to ``to_subject`` (same payload and headers), then delete it.

    Publish first, delete after the PubAck: a crash in between leaves both copies, never neither. The copy's
    ``Nats-Msg-Id`` is the original's plus ``.requeued.<stream sequence>``: a second mover (a retry, another
    router) publishes the same id and the stream drops it, while the original's own id would have been dropped
    as a duplicate of the original itself. Returns how many were moved.
    """
    moved, seq = 0, 1
    while True:
        try:
            msg = await js.get_msg(stream, seq=seq, subject=subject, next=True)
        except NotFoundError:
            return moved
        assert msg.seq is not None, "a stored message has a sequence"
        headers = dict(msg.headers or {})
        headers[MSG_ID] = f"{headers.get(MSG_ID, stream)}.requeued.{msg.seq}"
        await js.publish(to_subject, msg.data or b"", headers=headers, stream=stream)
        try:
            await js.delete_msg(stream, msg.seq)
        except APIError as exc:
            if exc.err_code not in _GONE:
                raise
        moved, seq = moved + 1, msg.seq + 1
