from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from costwise.contracts import decode

__all__ = ["first_stored"]

T = TypeVar("T")


async def first_stored(
    js: JetStreamContext, subject: str, kind: type[T], match: Callable[[T], bool], *, timeout: float = 30
) -> T:
    """The first message on ``subject`` (stored or yet to come) that decodes as ``kind`` and matches."""
    sub = await js.subscribe(subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    try:
        while True:
            message = decode((await sub.next_msg(timeout=timeout)).data, kind)
            if match(message):
                return message
    finally:
        await sub.unsubscribe()
