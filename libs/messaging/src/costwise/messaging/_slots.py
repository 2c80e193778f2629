"""The worker pull loop: ask JetStream for exactly as many jobs as there are free slots."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from nats.js import JetStreamContext

__all__ = ["keep_alive", "pull_into_slots"]


async def pull_into_slots(
    psub: JetStreamContext.PullSubscription,
    *,
    free: Callable[[], int],
    freed: asyncio.Event,
    stopping: Callable[[], bool],
    admit: Callable[[Msg], Awaitable[None]],
) -> None:
    """Fetch up to ``free()`` messages and ``admit`` each; while no slot is free, wait for ``freed``.

    The pull model's back-pressure: a full worker asks for nothing, so the queue hands work to idle ones.
    A message fetched after ``stopping()`` turned true is handed straight back (nak) for another worker.
    """
    while not stopping():
        slots = free()
        if slots <= 0:
            freed.clear()
            await freed.wait()
            continue
        try:
            msgs = await psub.fetch(slots, timeout=0.5)
        except TimeoutError:
            continue
        for msg in msgs:
            if stopping():
                await msg.nak()
            else:
                await admit(msg)


async def keep_alive(msg: Msg, every_s: float) -> None:
    """Tell JetStream every ``every_s`` that ``msg`` is still being worked on (run as a task; cancel when done).

    A long job must not outlive ``ack_wait`` and be handed to a second worker; a missed beat is harmless.
    """
    while True:
        await asyncio.sleep(every_s)
        with contextlib.suppress(Exception):
            await msg.in_progress()
