"""Composition root of the webhooks service: the only place it connects to anything.

results ──(durable webhooks-results, one at a time)──▶ outbox costwise.v1.webhooks.<tenant>
outbox  ──(durable webhooks-tenant-<tenant>, max_ack_pending=1)──▶ signed POST; nak(delay) to retry
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable

import httpx
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from opentelemetry.trace import TracerProvider

from costwise.contracts import ErrorCode, subjects
from costwise.contracts.subjects import WEBHOOKS, WEBHOOKS_RESULTS
from costwise.messaging import connect, ensure_consumer, provision, publish

from .delivery import SERVICE, Attempt, Delivery, traced
from .guard import Guard, Resolver, system_resolver
from .sender import make_client
from .settings import WebhooksSettings, load_secrets
from .signing import Signer

__all__ = ["SERVICE", "Webhooks", "build"]

log = logging.getLogger("costwise.webhooks")
_TENANT_PREFIX = subjects.webhooks_tenant("").durable


class Webhooks:
    """Moves results with a callback into per-tenant outboxes and delivers each outbox in order."""

    def __init__(self, settings: WebhooksSettings, nc: Client, delivery: Delivery, *, owns_nc: bool) -> None:
        self.settings = settings
        self.nc = nc
        self.js = nc.jetstream()
        self.delivery = delivery
        self._owns_nc = owns_nc
        self._tasks: dict[str, asyncio.Task[None]] = {}  # loop name → task; "" is the results loop
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        self._spawn("/rescan", self._rescan())  # starts the results loop and every known tenant's

    async def stop(self) -> None:
        """Finish the messages in hand, then stop pulling (a message fetched and dropped would hold its
        outbox, max_ack_pending=1, until ack_wait)."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if rescan := self._tasks.pop("/rescan", None):
            rescan.cancel()
        if loops := list(self._tasks.values()):
            grace = self.settings.poll_s + self.settings.attempt_timeout_s + 5
            _, late = await asyncio.wait(loops, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
        self._tasks.clear()
        await self.delivery.client.aclose()
        if self._owns_nc:
            await self.nc.drain()

    async def on_result(self, msg: Msg) -> None:
        """Copy a result that has a callback into its tenant's outbox (deduplicated per request)."""
        result = await self.delivery.decode(msg, lambda r: subjects.results(r.tenant, r.request_id))
        if result is None:
            return
        age_s = self.delivery.clock() - result.completed_ms / 1000
        if result.callback_url is not None and result.completed_ms and age_s > self.settings.retry_window_s:
            # e.g. the backlog a first deployment finds, or an outage longer than the window: replayable
            why = Attempt(error=f"completed {age_s:.0f} s ago, before the webhooks service could send it")
            await self.delivery.give_up(msg, result, ErrorCode.CALLBACK_FAILED, why, attempts=0)
            return
        if result.callback_url is not None:
            await self.adopt(result.tenant)
            msg_id = subjects.dedup_id(result.tenant, result.request_id)
            with traced(self.delivery.tracer, "webhooks enqueue", msg.headers):
                await publish(self.js, subjects.webhooks(result.tenant), msg.data, msg_id=msg_id)
        await msg.ack()

    async def adopt(self, tenant: str) -> None:
        """Make sure ``tenant``'s outbox consumer exists and this instance pulls from it."""
        if tenant in self._tasks or self._stopping.is_set():
            return
        spec = subjects.webhooks_tenant(tenant, ack_wait_s=self.settings.ack_wait_s)
        await ensure_consumer(self.js, spec)
        self._spawn(tenant, self._pull(spec.durable, spec.stream, self._deliver_one))

    async def _deliver_one(self, msg: Msg) -> None:
        await _acquire(self._slots, msg, every=self.settings.ack_wait_s / 3)
        try:
            await self.delivery.handle(msg)
        finally:
            self._slots.release()

    def _spawn(self, name: str, coro: Awaitable[None]) -> None:
        task = self._tasks[name] = asyncio.ensure_future(coro)
        task.add_done_callback(lambda done: self._ended(name, done))

    def _ended(self, name: str, task: asyncio.Task[None]) -> None:
        # A loop that died (e.g. its consumer was deleted) is forgotten, so the next rescan starts it again.
        if self._tasks.get(name) is task and not self._stopping.is_set():
            del self._tasks[name]
            if not task.cancelled() and task.exception():
                log.error("loop %r ended: %r", name or "results", task.exception())

    async def _pull(self, durable: str, stream: str, handle: Callable[[Msg], Awaitable[None]]) -> None:
        psub = await self.js.pull_subscribe_bind(durable, stream)
        try:
            while not self._stopping.is_set():
                try:
                    msgs = await psub.fetch(1, timeout=self.settings.poll_s)
                except TimeoutError:  # nats-py raises its own or, on a late "no messages", asyncio's
                    continue
                except NatsError as exc:  # reconnecting, the server is restarting, or the consumer is gone
                    if await _deleted(self.js, stream, durable):
                        log.warning("consumer %s was deleted; the tenant's next result re-creates it", durable)
                        return
                    log.warning("pulling %s failed: %r", durable, exc)
                    await asyncio.sleep(self.settings.poll_s)
                    continue
                for msg in msgs:
                    await _safely(handle, msg)
        finally:
            if self._stopping.is_set():
                with contextlib.suppress(NatsError):
                    await self._hand_back(psub)
            with contextlib.suppress(NatsError):  # a pull subscription left behind stalls the connection's drain
                await psub.unsubscribe()

    async def _hand_back(self, psub: JetStreamContext.PullSubscription) -> None:
        """Nak what reached us for a pull that had already timed out: dropped at unsubscribe, it would hold
        its outbox until ack_wait. The flush makes sure every such message has arrived."""
        await self.nc.flush()
        # nats-py 2.16 queues these for the next fetch and has no public way to take them without pulling again.
        queue = getattr(getattr(psub, "_sub", None), "_pending_queue", None)
        while queue is not None and not queue.empty():
            msg = queue.get_nowait()
            if not JetStreamContext.is_status_msg(msg):
                await msg.nak()

    async def _rescan(self) -> None:
        """Adopt outboxes created elsewhere (another instance's results loop, a replay), and restart the
        results loop if it died."""
        while True:
            try:
                if "" not in self._tasks:
                    self._spawn("", self._pull(WEBHOOKS_RESULTS.durable, WEBHOOKS_RESULTS.stream, self.on_result))
                for tenant in await _outbox_tenants(self.js):
                    await self.adopt(tenant)
            except NatsError as exc:
                log.warning("looking for tenant outboxes failed: %r", exc)
            await asyncio.sleep(self.settings.rescan_s)


async def _outbox_tenants(js: JetStreamContext) -> list[str]:
    names: list[str] = []
    offset = 0
    while batch := await js.consumers_info(WEBHOOKS.name, offset=offset):
        names += [c.name for c in batch]
        offset += len(batch)
    return [n.removeprefix(_TENANT_PREFIX) for n in names if n.startswith(_TENANT_PREFIX)]


async def _deleted(js: JetStreamContext, stream: str, durable: str) -> bool:
    try:
        await js.consumer_info(stream, durable)
    except NotFoundError:
        return True
    except NatsError:
        pass  # can't tell now: keep the loop, ask again after the next failure
    return False


async def _safely(handle: Callable[[Msg], Awaitable[None]], msg: Msg) -> None:
    """A handler failure (NATS hiccup, bug) retries the message soon; it never stops the loop."""
    try:
        await handle(msg)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("handling %s failed; retrying it", msg.subject)
        with contextlib.suppress(Exception):
            await msg.nak(delay=1.0)


async def _acquire(slots: asyncio.Semaphore, msg: Msg, *, every: float) -> None:
    """Wait for an HTTP slot, telling JetStream we still hold ``msg`` so it is not redelivered meanwhile."""
    while True:
        try:
            async with asyncio.timeout(every):
                await slots.acquire()
            return
        except TimeoutError:
            await msg.in_progress()


async def build(
    settings: WebhooksSettings,
    *,
    nc: Client | None = None,
    resolver: Resolver = system_resolver,
    http: httpx.AsyncClient | None = None,
    tracer_provider: TracerProvider | None = None,
    clock: Callable[[], float] = time.time,
    rng: Callable[[], float] = random.random,
) -> Webhooks:
    """Load the secrets and the allow-list (ValueError when bad, before connecting anywhere), provision the
    service's streams and consumer, and wire it (call ``start()``)."""
    signer, guard = Signer(load_secrets(settings)), Guard(settings.allow, resolver)
    await provision(settings.nats_url, (WEBHOOKS_RESULTS,), name=SERVICE)
    owns_nc = nc is None
    nc = nc or await connect(settings.nats_url, name=SERVICE)
    delivery = Delivery(
        settings,
        nc.jetstream(),
        signer=signer,
        guard=guard,
        client=http or make_client(settings),
        tracer=tracer_provider.get_tracer("costwise.webhooks") if tracer_provider else None,
        clock=clock,
        rng=rng,
    )
    return Webhooks(settings, nc, delivery, owns_nc=owns_nc)
