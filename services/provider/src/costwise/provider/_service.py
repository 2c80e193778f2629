"""The provider worker's handler: a job of its backend is answered through the provider's API and completed."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import httpx
from nats.aio.client import Client
from opentelemetry.trace import SpanKind, Tracer

from costwise.catalog import Provider
from costwise.contracts import Clock, Job, now_ms, subjects
from costwise.contracts.subjects import ConsumerSpec
from costwise.messaging import Consumer, hand_back_current, publish_completion, usage_event

from ._completion import completion_of
from ._openai import Answer, Failure, call
from ._relay import Relay
from .settings import ProviderSettings

__all__ = ["SERVICE", "ProviderWorker", "jobs_queue"]

log = logging.getLogger("costwise.provider")
SERVICE = "provider"


def jobs_queue(settings: ProviderSettings, provider: Provider) -> ConsumerSpec:
    """The consumer every worker of this backend shares, as GPU workers of a pool do."""
    return subjects.worker_jobs(provider.name, ack_wait_s=settings.ack_wait_s, max_deliver=settings.max_deliver)


class ProviderWorker:
    """Keeps up to ``provider.concurrency`` calls in flight; every job ends as a completion (answer or failure)."""

    def __init__(
        self,
        settings: ProviderSettings,
        nc: Client,
        provider: Provider,
        http: httpx.AsyncClient,
        *,
        api_key: str | None,
        clock: Clock,
        tracer: Tracer,
        owned: contextlib.AsyncExitStack,
    ) -> None:
        self.settings = settings
        self.nc = nc
        self.js = nc.jetstream()
        self.provider = provider
        self.http = http
        self.clock = clock
        self.tracer = tracer
        self._api_key = api_key
        self._owned = owned
        """What ``build`` opened; ``start`` adds the consumer's stop, so ``stop`` closes it all in reverse."""
        self.consumer = Consumer(
            jobs_queue(settings, provider),
            self.on_job,
            service=SERVICE,
            concurrency=provider.concurrency,
            heartbeat_s=settings.heartbeat_s,  # a slow provider must not let ack_wait hand the job to another worker
            tracer=tracer,
        )

    async def on_job(self, job: Job) -> None:
        relay = Relay(self.nc, job) if job.streams else None
        try:
            outcome, elapsed_s = await self._call(job, relay)
        except asyncio.CancelledError:  # stopped past the grace mid-call: another worker takes the job
            if relay is not None and relay.sent:  # ... and its stream goes on after what this one sent
                await hand_back_current(self.js, job, relay.checkpoint(self.settings.worker_id))
                log.info("handed back %s with %d streamed characters", job.job_id, len(relay.sent))
            raise
        if isinstance(outcome, Failure):
            log.warning("job %s: %s failed: %s", job.job_id, self.provider.name, outcome.message)
        done = completion_of(
            job,
            outcome,
            provider=self.provider,
            worker_id=self.settings.worker_id,
            elapsed_s=elapsed_s,
            now_ms=now_ms(self.clock),
        )
        if relay is not None:  # the stream's last word comes before the completion, as a GPU worker's does
            if done.error is not None:
                await relay.fail(done.error)
            else:
                await relay.finish(done.finish_reason, done.usage.completion_tokens, done.model)
        # A failed call is not billed by the provider, so it costs nothing here.
        await publish_completion(self.js, done, usage_event(done) if isinstance(outcome, Answer) else None)

    async def _call(self, job: Job, relay: Relay | None) -> tuple[Answer | Failure, float]:
        with self.tracer.start_as_current_span("provider.job", kind=SpanKind.CLIENT):
            started = self.clock()
            outcome = await call(
                self.http,
                self.provider,
                job.request,
                api_key=self._api_key,
                max_bytes=self.settings.max_response_bytes,
                clock=self.clock,
                relay=relay,
            )
            return outcome, self.clock() - started

    async def start(self) -> None:
        await self.consumer.start(self.js)
        # Cancelled calls' jobs go back to the queue (nak) for another worker.
        self._owned.push_async_callback(self.consumer.stop, self.settings.grace_s)
        log.info("provider worker %s serving %s", self.settings.worker_id, self.provider.name)

    async def stop(self) -> None:
        await self._owned.aclose()
