"""The one consumer path every service uses: typed pull consumers on nats-py.

Each message is decoded into its contract Struct, checked against the tenant its subject names, and handled in
a task of its own (at most as many at once as there are free :class:`Slots`), inside a consumer span that
continues the publisher's trace. Not FastStream: per message it spent ~0.45 ms more CPU (fast_depends, an anyio
task group, a memory stream, the context repository) and had no backoff on 503s (docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import typing
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, NamedTuple

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from opentelemetry.trace import SpanKind, Tracer

from costwise.contracts import DecodeError, ErrorCode, decode
from costwise.contracts.subjects import ConsumerSpec
from costwise.telemetry import extract

from ._current import decode_failure, handling, poison, retry_or_give_up, tenant_mismatch
from ._provision import ensure_consumer
from ._publish import ELECTION_WAIT_S, MSG_ID, bus_unavailable
from ._slots import Slots, keep_alive, pull_while_free

__all__ = ["Consumer", "Refusal"]

log = logging.getLogger("costwise.messaging")
Handler = Callable[[Any], Awaitable[Any]]


class Refusal(NamedTuple):
    """Why a message cannot be handled, ever: it is dead-lettered with this code (a retry would fail the same way)."""

    code: ErrorCode
    reason: str


def _payload_type(handler: Handler) -> tuple[type[Any], bool]:
    """The contract Struct a handler takes, from its annotation, and whether it takes a batch of them
    (``async def on_x(self, x: X) -> None`` or ``async def on_xs(self, xs: list[X]) -> Mapping[int, Refusal]``)."""
    hints = typing.get_type_hints(handler)
    hints.pop("return", None)
    (kind,) = hints.values()
    if typing.get_origin(kind) is list:
        (kind,) = typing.get_args(kind)
        return typing.cast(type[Any], kind), True
    return typing.cast(type[Any], kind), False


class Consumer:
    """Pull ``spec``'s durable into ``handler``.

    A handler of one message acks it itself (``ack_current``) once its outcome is durably stored, or refuses it
    (``reject_current``). A handler of a batch (``list[X]``) returns the refusals by index; the consumer acks
    the rest once it returns. Undecodable messages and messages whose payload names another tenant than their
    subject are dead-lettered (the caller told, where one waits); a handler that raises is retried with backoff
    up to the consumer's ``max_deliver``, then dead-lettered; a handler cancelled by :meth:`stop` has its
    message handed back (nak) unless it settled it itself.
    """

    def __init__(
        self,
        spec: ConsumerSpec,
        handler: Handler,
        *,
        service: str,
        concurrency: int = 1,
        slots: Slots | None = None,
        batch: int = 64,
        most: int | None = None,
        heartbeat_s: float | None = None,
        fetch_s: float = 0.5,
        recreate: bool = False,
        tracer: Tracer | None = None,
    ) -> None:
        """``slots`` shares room with other consumers (else ``concurrency`` of its own); ``batch`` is how many a
        batch handler gets at most; ``most`` caps one fetch (a worker's own queue pulls one at a time);
        ``heartbeat_s`` keeps a long handler's message from being redelivered; ``fetch_s`` is how long one pull
        waits (an idle consumer sends a pull request per ``fetch_s``); ``recreate`` provisions the consumer
        before binding and again when it disappears (else a deleted consumer ends :attr:`pulling`) — only for
        work-queue streams: made again, a consumer starts from the first message its stream still keeps."""
        self.spec = spec
        self.handler = handler
        self.payload, self.batched = _payload_type(handler)
        self.service = service
        self.slots = slots or Slots(concurrency)
        self.batch = batch
        self.most = most
        self.heartbeat_s = heartbeat_s
        self.fetch_s = fetch_s
        self.recreate = recreate
        self.tracer = tracer
        self.pulling: asyncio.Task[None] | None = None
        """The pull loop: done once stopped, or when the consumer was deleted (its exception says so)."""
        self._running: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._abandoned = False

    async def start(self, js: JetStreamContext) -> None:
        self._js = js
        if self.recreate:
            await ensure_consumer(js, self.spec)
        psub = await js.pull_subscribe_bind(self.spec.durable, self.spec.stream)
        self.pulling = asyncio.create_task(self._pull_loop(psub), name=f"pull {self.spec.durable}")

    def _want(self) -> int:
        free = self.slots.free()
        if self.batched:
            return self.batch if free > 0 else 0
        return free if self.most is None else min(free, self.most)

    async def _pull_loop(self, psub: JetStreamContext.PullSubscription) -> None:
        while True:
            try:
                await pull_while_free(
                    psub,
                    want=self._want,
                    freed=self.slots.freed,
                    stopping=lambda: self._stopping,
                    admit=self._admit,
                    fetch_s=self.fetch_s,
                )
                return
            except NotFoundError:
                if not self.recreate or self._stopping:
                    raise
                log.info("consumer %s is gone; making it again", self.spec.durable)
            finally:
                with contextlib.suppress(Exception):
                    await psub.unsubscribe()  # a registered pull subscription stalls the connection's drain
            psub = await self._rebind()

    async def _rebind(self) -> JetStreamContext.PullSubscription:
        """Provision the consumer again and bind to it, retrying while the server cannot answer."""
        for attempt in itertools.count():
            await asyncio.sleep(min(0.1 * 2**attempt, 2.0))
            try:
                await ensure_consumer(self._js, self.spec)
                return await self._js.pull_subscribe_bind(self.spec.durable, self.spec.stream)
            except Exception as exc:  # a server restarting, a meta leader being elected
                log.debug("making consumer %s again failed: %r", self.spec.durable, exc)
        raise AssertionError("unreachable")

    async def _admit(self, msgs: list[Msg]) -> None:
        work = [self._handle_batch(msgs)] if self.batched else [self._handle(msg) for msg in msgs]
        for coro in work:
            self.slots.hold()
            task = asyncio.create_task(coro)
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _handle(self, msg: Msg) -> None:
        await self._in_slot([msg], self._handle_one(msg))

    async def _in_slot(self, msgs: list[Msg], work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` once a shared slot is free; whatever happens, give the slot back."""
        ran = False
        try:
            await self.slots.run(msgs, beat_s=self.spec.ack_wait_s / 3)
            ran = True
            await work
        except asyncio.CancelledError:
            if not ran:  # stopped while waiting for a slot: never started, so hand its messages back here
                work.close()
                await self._hand_back(msgs)
            raise
        finally:
            self.slots.release(ran=ran)

    async def _handle_one(self, msg: Msg) -> None:
        handling(msg)
        heartbeat = asyncio.create_task(keep_alive(msg, self.heartbeat_s)) if self.heartbeat_s else None
        try:
            with self._span(msg):
                await self._guarded(msg)
        except asyncio.CancelledError:
            await self._hand_back([msg])
            raise
        finally:
            if heartbeat is not None:
                heartbeat.cancel()

    async def _hand_back(self, msgs: list[Msg]) -> None:
        """Stopping: what a cancelled handler did not settle goes back now (nak), not after ack_wait."""
        if self._abandoned:
            return
        for msg in msgs:
            if not msg.is_acked:
                with contextlib.suppress(Exception):
                    await msg.nak()

    def _span(self, msg: Msg) -> contextlib.AbstractContextManager[Any]:
        if self.tracer is None:
            return contextlib.nullcontext()
        span = self.tracer.start_as_current_span(
            f"{msg.subject} process",
            context=extract(msg.headers),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "nats",
                "messaging.destination.name": msg.subject,
                "messaging.consumer.group.name": self.spec.durable,
                # the dedup id names the tenant and the request (or job): how a user finds "my request's" span
                "messaging.message.id": (msg.headers or {}).get(MSG_ID, ""),
            },
        )
        return span

    async def _typed(self, msg: Msg) -> Any | None:
        """The payload, or ``None`` once the message was dead-lettered for what it carries."""
        try:
            payload = decode(msg.data, self.payload)
        except DecodeError:
            await poison(
                self._js, msg, self.service, ErrorCode.MALFORMED_MESSAGE, decode_failure(msg.subject, msg.data)
            )
            return None
        if (forged := tenant_mismatch(msg.subject, payload)) is not None:
            await poison(self._js, msg, self.service, ErrorCode.TENANT_MISMATCH, forged)
            return None
        return payload

    async def _guarded(self, msg: Msg) -> None:
        payload = await self._typed(msg)
        if payload is None:
            return
        deadline = asyncio.get_running_loop().time() + ELECTION_WAIT_S
        while True:
            try:
                await self.handler(payload)
                return
            except Exception as exc:
                # A stream (or KV bucket) electing a leader fails every call at once: redelivering would spend the
                # message's deliveries within seconds, before the election ends. Handle it again here instead.
                if bus_unavailable(exc) and not self._stopping and asyncio.get_running_loop().time() < deadline:
                    with contextlib.suppress(Exception):
                        await msg.in_progress()
                    await asyncio.sleep(0.5)
                    continue
                await retry_or_give_up(self._js, msg, self.service, self.spec, exc)
                return

    async def _handle_batch(self, msgs: list[Msg]) -> None:
        await self._in_slot(msgs, self._batch(msgs))

    async def _batch(self, msgs: list[Msg]) -> None:
        try:
            typed = [(msg, payload) for msg in msgs if (payload := await self._typed(msg)) is not None]
            if typed:
                await self._settle_batch(typed)
        except asyncio.CancelledError:
            await self._hand_back(msgs)
            raise

    async def _settle_batch(self, typed: list[tuple[Msg, Any]]) -> None:
        try:
            refusals: Mapping[int, Refusal] = await self.handler([payload for _, payload in typed]) or {}
        except Exception as exc:
            log.exception("batch of %d from %s failed; retrying each", len(typed), self.spec.durable)
            for msg, _ in typed:
                await retry_or_give_up(self._js, msg, self.service, self.spec, exc, quiet=True)
            return
        for i, (msg, _) in enumerate(typed):
            if (refusal := refusals.get(i)) is not None:
                await poison(self._js, msg, self.service, refusal.code, refusal.reason)
            else:
                await msg.ack()

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop pulling; give handlers already running ``grace_s`` to finish, then cancel the rest (their
        messages go back to the stream: nak, or whatever the handler does when cancelled)."""
        self._stopping = True
        self.slots.freed.set()  # wakes a pull waiting for room, so it sees it should stop
        # Side by side: the grace (and a preempted worker's hand-back after it) must not wait for the last fetch.
        await asyncio.gather(self._end_pulling(), self._end_handlers(grace_s))

    async def _end_pulling(self) -> None:
        if self.pulling is None:
            return
        if not self._abandoned:
            # A fetch in flight ends within its timeout and hands back (nak) what it brought; cancelled, what the
            # server sent it would wait out ack_wait (holding a webhook outbox that long).
            await asyncio.wait({self.pulling}, timeout=self.fetch_s + 1.5)
        self.pulling.cancel()
        await asyncio.gather(self.pulling, return_exceptions=True)

    async def _end_handlers(self, grace_s: float) -> None:
        late = set(self._running)
        if late and grace_s > 0:
            _, late = await asyncio.wait(late, timeout=grace_s)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    async def abandon(self) -> None:
        """Stop as a SIGKILLed process would: no ack, nak or heartbeat ever again (JetStream redelivers after
        ``ack_wait``). Benchmarks and chaos tests use it to time that path."""
        self._abandoned = True
        await self.stop(grace_s=0)
