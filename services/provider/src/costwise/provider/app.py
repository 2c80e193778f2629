"""The provider worker: pulls its backend's jobs like a GPU worker and answers them through an external API."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable

import httpx
from nats.aio.client import Client as Nats
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from opentelemetry.trace import NoOpTracerProvider, SpanKind, TracerProvider

from costwise.catalog import Catalog, CatalogError, Provider, load_catalog
from costwise.contracts import (
    Completion,
    DecodeError,
    EngineTimings,
    ErrorCode,
    ErrorInfo,
    Job,
    Usage,
    UsageEvent,
    decode,
    subjects,
)
from costwise.messaging import connect, ensure_consumer, ensure_streams, give_up, keep_alive, publish, pull_into_slots
from costwise.telemetry import extract

from ._openai import Answer, Failure, call
from .settings import ProviderSettings

__all__ = ["ProviderWorker", "build"]

log = logging.getLogger("costwise.provider")
SERVICE = "provider"


class ProviderWorker:
    """Keeps up to ``provider.concurrency`` calls in flight; every job ends as a completion (answer or failure)."""

    def __init__(
        self,
        settings: ProviderSettings,
        nc: Nats,
        provider: Provider,
        http: httpx.AsyncClient,
        tracer_provider: TracerProvider | None,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.nc = nc
        self.js = nc.jetstream()
        self.provider = provider
        self.http = http
        self.tracer = (tracer_provider or NoOpTracerProvider()).get_tracer("costwise.provider")
        self.clock = clock
        # Read once: the key lives in the environment, never in config, logs or messages.
        self._api_key = os.environ.get(provider.api_key_env) if provider.api_key_env else None
        self.consumer = subjects.worker_jobs(
            provider.name, ack_wait_s=settings.ack_wait_s, max_deliver=settings.max_deliver
        )
        self.running: set[asyncio.Task[None]] = set()
        self._slot_freed = asyncio.Event()
        self._stopping = False
        self._loop: asyncio.Task[None] | None = None
        self._psub: JetStreamContext.PullSubscription | None = None

    async def start(self) -> None:
        await ensure_streams(self.js)
        await ensure_consumer(self.js, self.consumer)
        self._psub = await self.js.pull_subscribe_bind(self.consumer.durable, self.consumer.stream)
        self._loop = asyncio.create_task(self._pull(self._psub), name=f"pull-{self.provider.name}")
        log.info("provider worker %s serving %s", self.settings.worker_id, self.provider.name)

    async def _pull(self, psub: JetStreamContext.PullSubscription) -> None:
        await pull_into_slots(
            psub,
            free=lambda: self.provider.concurrency - len(self.running),
            freed=self._slot_freed,
            stopping=lambda: self._stopping,
            admit=self._admit,
        )

    async def _admit(self, msg: Msg) -> None:
        task = asyncio.create_task(self._handle(msg))
        self.running.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.running.discard(task)
        self._slot_freed.set()

    async def _handle(self, msg: Msg) -> None:
        try:
            job = decode(msg.data, Job)
        except DecodeError as exc:
            await give_up(self.js, msg, service=SERVICE, code=ErrorCode.MALFORMED_MESSAGE, reason=f"invalid job: {exc}")
            return
        heartbeat = asyncio.create_task(keep_alive(msg, self.settings.heartbeat_s))
        try:
            with self.tracer.start_as_current_span("provider.job", context=extract(msg.headers), kind=SpanKind.CLIENT):
                await self._serve(msg, job)
        except asyncio.CancelledError:
            await msg.nak()  # stopping: another worker takes it
            raise
        except Exception:  # a bug here must not leave the job to time out silently: retry it
            log.exception("job %s failed in the provider worker", job.job_id)
            await msg.nak(delay=1.0)
        finally:
            heartbeat.cancel()

    async def _serve(self, msg: Msg, job: Job) -> None:
        started = self.clock()
        outcome = await call(
            self.http,
            self.provider,
            job.request,
            api_key=self._api_key,
            max_bytes=self.settings.max_response_bytes,
            clock=self.clock,
        )
        elapsed = self.clock() - started
        tenant, now_ms = job.request.tenant, int(self.clock() * 1000)
        done = self._completion(job, outcome, elapsed, now_ms)
        publishes = [
            publish(self.js, subjects.completions(job.pool), done, msg_id=subjects.dedup_id(tenant, job.job_id))
        ]
        if isinstance(outcome, Answer):  # a failed call is not billed by the provider, so it costs nothing here
            event = UsageEvent(
                request_id=job.request.request_id,
                job_id=job.job_id,
                tenant=tenant,
                pool=job.pool,
                worker_id=self.settings.worker_id,
                spot=False,
                model=outcome.model,
                usage=outcome.usage,
                engine_s=elapsed,
                ts_ms=now_ms,
                stage=job.stage,
                attempt=job.attempt,
                api_key_id=job.request.api_key_id,
            )
            usage_id = subjects.dedup_id(tenant, job.job_id, "usage")
            publishes.append(publish(self.js, subjects.usage(tenant), event, msg_id=usage_id))
        await asyncio.gather(*publishes)  # stored before the ack: a crash in between repeats, deduplicated
        await msg.ack()

    def _completion(self, job: Job, outcome: Answer | Failure, elapsed: float, now_ms: int) -> Completion:
        common = {"job": job, "worker_id": self.settings.worker_id, "spot": False, "completed_ms": now_ms}
        if isinstance(outcome, Failure):
            log.warning("job %s: %s failed: %s", job.job_id, self.provider.name, outcome.message)
            error = ErrorInfo(code=outcome.code, message=f"{self.provider.name}: {outcome.message}")
            return Completion(
                **common, model=self.provider.model, text="", finish_reason="abort", usage=Usage(), error=error
            )  # type: ignore[arg-type]
        return Completion(
            **common,  # type: ignore[arg-type]
            model=outcome.model,
            text=outcome.text,
            finish_reason=outcome.finish_reason,  # type: ignore[arg-type]
            usage=outcome.usage,
            logprobs=outcome.logprobs,
            timings=EngineTimings(engine_s=elapsed),
        )

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop pulling, let calls in flight finish for ``grace_s``, hand the rest back."""
        self._stopping = True
        self._slot_freed.set()
        if self.running:
            _, late = await asyncio.wait(set(self.running), timeout=grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._loop:
            await self._loop
        if self._psub:
            await self._psub.unsubscribe()
        await self.http.aclose()


async def build(
    settings: ProviderSettings,
    *,
    nc: Nats | None = None,
    catalog: Catalog | None = None,
    http: httpx.AsyncClient | None = None,
    tracer_provider: TracerProvider | None = None,
    clock: Callable[[], float] = time.time,
) -> ProviderWorker:
    """Composition root: find this worker's provider in the catalog, connect, make the HTTP client."""
    catalog = catalog or load_catalog(settings.catalog)
    try:
        provider = catalog.backend(settings.backend)
    except KeyError:
        raise CatalogError(f"backend {settings.backend!r} is not in the catalog") from None
    if not isinstance(provider, Provider):
        raise CatalogError(f"backend {settings.backend!r} is a worker pool, not a provider: run a GPU worker for it")
    nc = nc or await connect(settings.nats_url, name=f"provider-{settings.worker_id}")
    # No redirects: a provider that redirects is misconfigured, and following one could leak the API key.
    http = http or httpx.AsyncClient(follow_redirects=False, limits=httpx.Limits(max_connections=provider.concurrency))
    return ProviderWorker(settings, nc, provider, http, tracer_provider, clock)
