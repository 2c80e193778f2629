"""Slot-sized pulls: ask JetStream for exactly as many messages as there is room to handle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError, ServiceUnavailableError

from ._queued import queued_first

__all__ = ["Slots", "keep_alive", "pull_while_free"]

log = logging.getLogger("costwise.messaging")

# Between fetches JetStream could not serve (503). Short: the local server answers a 503 at once, at no cost to
# the cluster, and a consumer's new leader serves the moment it is elected (4-9 s after its old node died).
_BACKOFF_S = (0.1, 0.2, 0.5)
_INFO_S = 1.0
_STILL_S = 10.0


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
    server still recovering its streams) it tries again at least once a second, so pulling resumes within about a
    second of the new leader; a consumer that was deleted raises :class:`~nats.js.errors.NotFoundError`, for the
    caller to decide. ``fetch_s`` is how long one pull waits for messages (an idle consumer sends one pull
    request per ``fetch_s``).
    """
    outage = _Outage(_name(psub))
    queued_first(psub._sub)  # nats-py keeps it private; fetch reads each message of a batch through it
    while not stopping():
        room = want()
        if room <= 0:
            freed.clear()
            await freed.wait()
            continue
        try:
            msgs = await psub.fetch(room, timeout=fetch_s)
        except TimeoutError:  # the consumer's leader answered "nothing yet" (a leaderless one answers 503)
            outage.over()
            continue
        except ServiceUnavailableError:
            await _unavailable(psub, outage)
            continue
        outage.over()
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


class _Outage:
    """Consecutive fetches JetStream could not serve: logged when it starts, every ``_STILL_S`` while it lasts (a
    consumer that never gets a leader back must show in the logs) and when it ends."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.failed = 0
        self.since = self.told = 0.0

    def again(self) -> float:
        """Count one more failed fetch; how long to wait before the next."""
        now = time.monotonic()
        if self.failed == 0:
            self.since = self.told = now
            log.warning("JetStream cannot serve %s for now (503); retrying", self.name)
        elif now - self.told >= _STILL_S:
            self.told = now
            log.warning("JetStream still cannot serve %s after %.0f s (503); retrying", self.name, now - self.since)
        self.failed += 1
        return _BACKOFF_S[min(self.failed - 1, len(_BACKOFF_S) - 1)]

    def over(self) -> None:
        if self.failed:
            took = time.monotonic() - self.since
            log.info("pulling from %s again after %d failed fetches (%.1f s)", self.name, self.failed, took)
            self.failed = 0


async def _unavailable(psub: JetStreamContext.PullSubscription, outage: _Outage) -> None:
    """After a 503 from a fetch: raise if the consumer is gone, else wait before the next fetch.

    The check waits ``_INFO_S`` at most: nobody answers a leaderless consumer's info request, and at nats-py's
    default 5 s each check would leave the consumer idle for seconds after its new leader took over.
    """
    pause = outage.again()
    started = time.monotonic()
    try:
        await psub._js.consumer_info(psub._stream, psub._consumer, timeout=_INFO_S)  # nats-py keeps them private
    except NotFoundError:
        raise
    except Exception:  # unanswered, or 503 itself, while the consumer or the meta leader is being elected
        pass
    await asyncio.sleep(max(0.0, pause - (time.monotonic() - started)))  # an unanswered check waited already


def _name(psub: JetStreamContext.PullSubscription) -> str:  # nats-py keeps the names private
    return f"{psub._stream}/{psub._consumer}"
