"""Composition root of the router: the only place it connects to anything."""

from __future__ import annotations

import time
from collections.abc import Callable

from faststream.nats import NatsBroker
from nats.js.errors import NotFoundError
from opentelemetry.trace import TracerProvider

from costwise.contracts import (
    Completion,
    ErrorCode,
    InferenceRequest,
    Job,
    MaxDeliveriesAdvisory,
    Output,
    Result,
    subjects,
)
from costwise.contracts.subjects import ROUTER_ADVISORIES, ROUTER_COMPLETIONS, ROUTER_ROUTE
from costwise.messaging import (
    ack_current,
    file_dead_letter,
    make_broker,
    provision,
    publish_durable,
    pull_subscriber,
    reject_current,
)

from .settings import RouterSettings

__all__ = ["Router", "build"]

SERVICE = "router"
CONSUMERS = (ROUTER_ROUTE, ROUTER_COMPLETIONS, ROUTER_ADVISORIES)


class Router:
    """Turns requests into jobs and completions into results; stateless, so run as many as you like."""

    def __init__(self, settings: RouterSettings, broker: NatsBroker, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.broker = broker
        self.clock = clock
        pull_subscriber(broker, ROUTER_ROUTE, batch=settings.batch, concurrency=settings.concurrency)(self.on_request)
        pull_subscriber(broker, ROUTER_COMPLETIONS, batch=settings.batch, concurrency=settings.concurrency)(
            self.on_completion
        )
        pull_subscriber(broker, ROUTER_ADVISORIES, batch=settings.batch)(self.on_max_deliveries)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def on_request(self, req: InferenceRequest) -> None:
        pool = self.settings.routes.get(req.model)
        if pool is None:
            known = ", ".join(sorted(self.settings.routes))
            why = f"model {req.model!r} is served by no pool (known: {known})"
            await reject_current(self.broker, service=SERVICE, code=ErrorCode.UNKNOWN_POOL, reason=why)
            return
        job = Job(job_id=req.request_id, request=req, pool=pool, routed_ms=self._now_ms())
        await publish_durable(self.broker, job, subjects.jobs(pool), msg_id=subjects.dedup_id(req.tenant, job.job_id))
        await ack_current(self.broker)

    async def on_completion(self, done: Completion) -> None:
        req = done.job.request
        result = Result(
            request_id=req.request_id,
            tenant=req.tenant,
            status="ok",
            output=Output(text=done.text, finish_reason=done.finish_reason),
            source="engine",
            model=done.model,
            pool=done.job.pool,
            usage=done.usage,
            callback_url=req.callback_url,
            created_ms=req.created_ms,
            completed_ms=self._now_ms(),
        )
        # Deduplicated by tenant + request id: a redelivered completion (or a second worker's) yields one result.
        await publish_durable(
            self.broker,
            result,
            subjects.results(req.tenant, req.request_id),
            msg_id=subjects.dedup_id(req.tenant, req.request_id),
        )
        await ack_current(self.broker)

    async def on_max_deliveries(self, advisory: MaxDeliveriesAdvisory) -> None:
        """A job used up its deliveries without an answer (e.g. its workers kept dying): tell the caller."""
        js = self.broker.connection.jetstream()
        try:
            job = await js.get_msg(advisory.stream, advisory.stream_seq)
        except NotFoundError:
            job = None  # already answered and acked, or handled by an earlier delivery of this advisory
        if job is not None and job.data is not None and job.subject is not None:
            why = f"no worker finished the job in {advisory.deliveries} deliveries (consumer {advisory.consumer})"
            await file_dead_letter(
                js,
                service=SERVICE,
                subject=job.subject,
                data=job.data,
                code=ErrorCode.MAX_DELIVERIES_EXCEEDED,
                reason=why,
                num_delivered=advisory.deliveries,
                stream_seq=advisory.stream_seq,
            )
            # A work-queue message that no consumer will deliver again would sit there forever.
            await js.delete_msg(advisory.stream, advisory.stream_seq)
        await ack_current(self.broker)

    async def start(self) -> None:
        await self.broker.start()

    async def stop(self) -> None:
        await self.broker.stop()


async def build(
    settings: RouterSettings,
    *,
    broker: NatsBroker | None = None,
    tracer_provider: TracerProvider | None = None,
    clock: Callable[[], float] = time.time,
) -> Router:
    """Provision the router's consumers and wire its handlers (call ``start()`` to begin pulling)."""
    await provision(settings.nats_url, CONSUMERS, name=SERVICE)
    broker = broker or make_broker(
        settings.nats_url,
        service=SERVICE,
        consumers=CONSUMERS,
        tracer_provider=tracer_provider,
    )
    return Router(settings, broker, clock)
