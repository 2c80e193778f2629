"""Slot-sized pulls: ask JetStream for exactly as many messages as there is room to handle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError, ServiceUnavailableError

__all__ = ["Slots", "keep_alive", "pull_while_free"]

log = logging.getLogger("costwise.messaging")

_BACKOFF_S = (0.1, 0.2, 0.5, 1.0, 2.0)


class Slots:
    """Room for handlers in flight, shared by every consumer that feeds the same engine or connection pool (a
    worker's pool queue and its own queue; every tenant's webhook outbox): each pull asks for as many messages
    as are free now, and at most ``size`` handlers run at once.

    Pulls sent side by side may together fetch more than is free; what arrives beyond ``size`` is held
    (``held``) and waits for a running handler to finish, telling JetStream it is still in hand meanwhile.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.held = 0
        """Messages admitted and not yet finished: running, or waiting to run."""
        self.running = 0
        self.freed = asyncio.Event()
        """Set whenever a slot frees (or a pull must wake up to see it should stop)."""

    def free(self) -> int:
        return self.size - self.held

    def hold(self) -> None:
        self.held += 1

    async def run(self, msgs: list[Msg], *, beat_s: float) -> None:
        """Wait until fewer than ``size`` handlers run, sending ``in_progress`` for ``msgs`` every ``beat_s``."""
        while self.running >= self.size:
            self.freed.clear()
            try:
                await asyncio.wait_for(self.freed.wait(), beat_s)
            except TimeoutError:
                for msg in msgs:
                    with contextlib.suppress(Exception):
                        await msg.in_progress()
        self.running += 1

    def release(self, *, ran: bool) -> None:
        self.held -= 1
        self.running -= ran
        self.freed.set()


async def pull_while_free(
    psub: JetStreamContext.PullSubscription,
    *,
    want: Callable[[], int],
    freed: asyncio.Event,
    stopping: Callable[[], bool],
    admit: Callable[[list[Msg]], Awaitable[None]],
    fetch_s: float = 0.5,
) -> None:
    """Fetch up to ``want()`` messages and ``admit`` them; while ``want()`` is 0, wait for ``freed``.

    The pull model's back-pressure: a full worker asks for nothing, so the queue hands work to idle ones.
    Messages fetched after ``stopping()`` turned true are handed straight back (nak) for another consumer.
    While JetStream cannot answer (503: a clustered consumer electing a new leader after its node died, a
    server still recovering its streams) it retries with backoff; a consumer that was deleted raises
    :class:`~nats.js.errors.NotFoundError`, for the caller to decide. ``fetch_s`` is how long one pull waits
    for messages (an idle consumer sends one pull request per ``fetch_s``).
    """
    outage = 0  # consecutive fetches JetStream could not answer
    while not stopping():
        room = want()
        if room <= 0:
            freed.clear()
            await freed.wait()
            continue
        try:
            msgs = await psub.fetch(room, timeout=fetch_s)
        except TimeoutError:
            continue
        except ServiceUnavailableError:
            await _unavailable(psub, outage)
            outage += 1
            continue
        if outage:
            log.info("pulling from %s again after %d failed fetches", _name(psub), outage)
            outage = 0
        if stopping():
            for msg in msgs:
                await msg.nak()
        else:
            await admit(msgs)


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
