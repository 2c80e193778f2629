"""The worker pull loop: ask JetStream for exactly as many jobs as there are free slots."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError, ServiceUnavailableError

__all__ = ["keep_alive", "pull_into_slots"]

log = logging.getLogger("costwise.messaging")

_BACKOFF_S = (0.1, 0.2, 0.5, 1.0, 2.0)


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
    While JetStream cannot answer (503: a clustered consumer electing a new leader after its node died, a
    server still recovering its streams) it retries with backoff; a consumer that was deleted raises
    :class:`~nats.js.errors.NotFoundError`, for the caller to decide.
    """
    outage = 0  # consecutive fetches JetStream could not answer
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
        except ServiceUnavailableError:
            await _unavailable(psub, outage)
            outage += 1
            continue
        if outage:
            log.info("pulling from %s again after %d failed fetches", _name(psub), outage)
            outage = 0
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


async def _unavailable(psub: JetStreamContext.PullSubscription, outage: int) -> None:
    """After a 503 from a fetch: raise if the consumer is gone, else wait before the next fetch."""
    try:
        await psub.consumer_info()
    except NotFoundError:
        raise
    except Exception:  # the info request fails the same way while JetStream is busy
        pass
    if outage == 0:
        log.warning("JetStream cannot serve %s for now (503); retrying", _name(psub))
    await asyncio.sleep(_BACKOFF_S[min(outage, len(_BACKOFF_S) - 1)])


def _name(psub: JetStreamContext.PullSubscription) -> str:  # nats-py keeps the names private
    return f"{psub._stream}/{psub._consumer}"
