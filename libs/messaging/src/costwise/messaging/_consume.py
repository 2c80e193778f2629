"""Typed pull consumers on nats-py: each message decoded into its contract Struct and handled in a task of its
own, at most ``concurrency`` at once, under the same guard as FastStream subscribers get.

The router's hot path runs on this instead of a FastStream subscriber: per message FastStream spends ~0.45 ms
of CPU (fast_depends, an anyio task group, a memory stream, the context repository) and adds a scheduling hop
before the handler runs, and the router handles two messages per request (docs/benchmarks.md, issue #2).
"""

from __future__ import annotations

import asyncio
import contextlib
import typing
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from opentelemetry.trace import SpanKind, Tracer

from costwise.contracts import DecodeError, ErrorCode, decode
from costwise.contracts.subjects import ConsumerSpec
from costwise.telemetry import extract

from ._current import decode_failure, handling, poison, retry_or_give_up
from ._slots import pull_into_slots

__all__ = ["Consumer"]

Handler = Callable[[Any], Awaitable[None]]


def _payload_type(handler: Handler) -> type[Any]:
    """The contract Struct a handler takes, from its annotation (``async def on_x(self, x: X) -> None``)."""
    hints = typing.get_type_hints(handler)
    hints.pop("return", None)
    (kind,) = hints.values()
    return typing.cast(type[Any], kind)


class Consumer:
    """Pull ``spec``'s durable into ``handler``; the handler acks (``ack_current``) once it is done.

    Undecodable messages are dead-lettered with the caller told; a handler that raises is retried with
    backoff up to the consumer's ``max_deliver``, then dead-lettered. Nothing is acked for the handler.
    """

    def __init__(
        self,
        spec: ConsumerSpec,
        handler: Handler,
        *,
        service: str,
        concurrency: int = 1,
        tracer: Tracer | None = None,
    ) -> None:
        self.spec = spec
        self.handler = handler
        self.payload = _payload_type(handler)
        self.service = service
        self.concurrency = concurrency
        self.tracer = tracer
        self._running: set[asyncio.Task[None]] = set()
        self._freed = asyncio.Event()
        self._stopping = False
        self._pull: asyncio.Task[None] | None = None

    async def start(self, js: JetStreamContext) -> None:
        self._js = js
        psub = await js.pull_subscribe_bind(self.spec.durable, self.spec.stream)
        self._pull = asyncio.create_task(self._pull_loop(psub), name=f"pull {self.spec.durable}")

    async def _pull_loop(self, psub: JetStreamContext.PullSubscription) -> None:
        try:
            await pull_into_slots(
                psub,
                free=lambda: self.concurrency - len(self._running),
                freed=self._freed,
                stopping=lambda: self._stopping,
                admit=self._admit,
            )
        finally:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()

    async def _admit(self, msg: Msg) -> None:
        task = asyncio.create_task(self._handle(msg))
        self._running.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._freed.set()

    async def _handle(self, msg: Msg) -> None:
        handling(msg)
        if self.tracer is None:
            await self._guarded(msg)
            return
        parent = extract(msg.headers)
        with self.tracer.start_as_current_span(
            f"{msg.subject} process", context=parent, kind=SpanKind.CONSUMER
        ) as span:
            span.set_attribute("messaging.system", "nats")
            span.set_attribute("messaging.destination.name", msg.subject)
            span.set_attribute("messaging.consumer.group.name", self.spec.durable)
            await self._guarded(msg)

    async def _guarded(self, msg: Msg) -> None:
        try:
            payload = decode(msg.data, self.payload)
        except DecodeError:
            await poison(
                self._js, msg, self.service, ErrorCode.MALFORMED_MESSAGE, decode_failure(msg.subject, msg.data)
            )
            return
        try:
            await self.handler(payload)
        except Exception as exc:
            await retry_or_give_up(self._js, msg, self.service, self.spec, exc)

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop pulling; give handlers already running ``grace_s`` to finish (the rest are redelivered)."""
        self._stopping = True
        if self._pull is not None:
            self._pull.cancel()
            await asyncio.gather(self._pull, return_exceptions=True)
        if self._running:
            _, late = await asyncio.wait(set(self._running), timeout=grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
