"""The worker's handler: a job of its pool (or of its own queue) is generated in its engine (vLLM in-process, or an
engine server it fronts) and completed, or, when the worker is preempted, checkpointed and handed back for another
worker to resume."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Iterator

import msgspec
from nats.aio.client import Client
from opentelemetry.trace import Tracer

from costwise.contracts import Clock, Job, now_ms, subjects
from costwise.contracts.subjects import ConsumerSpec
from costwise.messaging import (
    Consumer,
    Refusal,
    Slots,
    current_message,
    hand_back_current,
    publish_completion,
    reject_current,
    usage_event,
)

from ._admission import admission
from ._completion import completion_of
from ._own import OwnQueue
from ._progress import Generation
from ._protocol import EngineRefused, EngineUnavailable, GenerationEngine
from ._running import Running, retry_links
from ._stream import DeltaPublisher
from .settings import WorkerSettings

__all__ = ["SERVICE", "Worker", "pool_queue"]

log = logging.getLogger("costwise.worker")
SERVICE = "worker"
_MAX_RETRY_DELAY_S = 30.0


def pool_queue(settings: WorkerSettings) -> ConsumerSpec:
    """The consumer every worker of the pool shares."""
    return subjects.worker_jobs(settings.pool, ack_wait_s=settings.ack_wait_s, max_deliver=settings.max_deliver)


def own_queue(settings: WorkerSettings) -> ConsumerSpec:
    """This worker's own consumer (prefix affinity); the server deletes it once the worker is gone."""
    return subjects.worker_own(
        settings.pool,
        settings.worker_id,
        ack_wait_s=settings.ack_wait_s,
        max_deliver=settings.max_deliver,
        idle_s=settings.own_idle_s,
    )


class Worker:
    """Serves one pool from two queues, the pool's and its own, into one engine; survives spot preemption."""

    def __init__(
        self,
        settings: WorkerSettings,
        nc: Client,
        engine: GenerationEngine,
        *,
        clock: Clock,
        tracer: Tracer,
        owned: contextlib.AsyncExitStack,
    ) -> None:
        self.settings = settings
        self.nc = nc
        self.js = nc.jetstream()
        self.engine = engine
        self.clock = clock
        self.tracer = tracer
        self._owned = owned
        """What ``build`` opened; ``start`` adds the wind-down on top, so ``stop`` closes it all in reverse."""
        self.own = OwnQueue(self.js, own_queue(settings), settings.pool)
        self.running: dict[int, Running] = {}
        """Jobs in the engine now, by ``id``."""
        self._grace_s = settings.grace_s
        self._abandoned = False
        slots = Slots(settings.max_in_flight)  # one engine batch, fed by both queues
        queue = functools.partial(
            Consumer, handler=self.on_job, service=SERVICE, slots=slots, heartbeat_s=settings.heartbeat_s, tracer=tracer
        )
        self.consumers = [
            queue(pool_queue(settings)),
            # One at a time keeps its pull (what the router reads as "this worker can take a job") open whenever a
            # slot is free; recreated when the server deleted it while this worker was full.
            queue(self.own.spec, most=1, recreate=True),
        ]

    async def on_job(self, job: Job) -> None:
        with self._span(job):
            prompt = self.engine.prepare(job.request.messages)
            refusal = self._admission(job, prompt)
            if refusal is not None:
                await reject_current(self.js, service=SERVICE, code=refusal.code, reason=refusal.reason)
                return
            run = self._running(job)
            try:
                gen = await self._generate(run, prompt)
            except EngineRefused as refused:  # as an admission refusal: a retry would be refused the same way
                await reject_current(self.js, service=SERVICE, code=refused.code, reason=refused.reason)
                return
            except EngineUnavailable as down:
                await self._retry_later(job, down)
                return
            if run.deltas is not None:  # the last tokens reach the stream before the completion is published
                await run.deltas.finish(run.progress, gen.finish_reason)
            await self._complete(run, gen)

    def _admission(self, job: Job, prompt: object) -> Refusal | None:
        return admission(
            job,
            pool=self.settings.pool,
            now_ms=now_ms(self.clock),
            prompt_tokens=self.engine.prompt_tokens(prompt),
            model=self.engine.model_name,
            max_model_len=self.engine.max_model_len,
        )

    def _running(self, job: Job) -> Running:
        progress = self.engine.resume(job.checkpoint)
        if not job.streams:
            return Running(job, progress)
        engine = self.engine
        deltas = DeltaPublisher(self.nc, job, progress, text=engine.text, tail=engine.tail, model=engine.model_name)
        return Running(job, progress, deltas)

    @contextlib.contextmanager
    def _span(self, job: Job) -> Iterator[None]:
        # A redelivery (a worker died) or a resumed checkpoint (a worker was preempted) is another try.
        delivered = current_message().metadata.num_delivered
        resumed = job.checkpoint.tokens if job.checkpoint else 0
        log.debug("job %s started (delivery %d, resuming after %d tokens)", job.job_id, delivered, resumed)
        with self.tracer.start_as_current_span("worker.job", links=retry_links(job, delivered)) as span:
            span.set_attribute("gen_ai.request.model", self.engine.model_name)
            span.set_attribute("costwise.job_id", job.job_id)
            span.set_attribute("messaging.message.delivery_count", delivered)
            span.set_attribute("costwise.resumed_tokens", resumed)
            yield

    async def _generate(self, run: Running, prompt: object) -> Generation:
        self.running[id(run)] = run
        try:
            on_step = run.deltas.step if run.deltas is not None else None
            job = run.job
            return await self.engine.generate(
                prompt, job.request.sampling, run.progress, on_step=on_step, logprobs=job.judged
            )
        except asyncio.CancelledError:  # stopped past the grace: a spot notice, or a SIGKILL (abandon) in tests
            if not self._abandoned:
                await self._hand_back(run)
            raise
        finally:
            del self.running[id(run)]

    async def _retry_later(self, job: Job, down: EngineUnavailable) -> None:
        """The engine server cannot be reached: the job goes back to the queue (nak) for another worker or a later
        try, later each time; on the last delivery the consumer gives it up with this error (dead letter)."""
        msg = current_message()
        delivered = msg.metadata.num_delivered
        if delivered >= self.settings.max_deliver:
            raise down
        log.warning("job %s back to the queue after delivery %d: %s", job.job_id, delivered, down)
        await msg.nak(delay=min(2.0 ** (delivered - 1), _MAX_RETRY_DELAY_S))

    async def _hand_back(self, run: Running) -> None:
        """Queue the job again with its checkpoint: the next worker resumes the generation instead of starting
        over."""
        job, progress = run.job, run.progress
        ckpt = progress.checkpoint(self.engine.text(progress), self.settings.worker_id)
        if run.deltas is not None:  # the resuming worker continues the stream where it got to
            await run.deltas.flush(progress)
            ckpt = msgspec.structs.replace(ckpt, streamed_tokens=run.deltas.offset)
        # Inside this attempt's span: the resuming worker's span follows it in the request's trace.
        await hand_back_current(self.js, job, ckpt)
        log.info("handed back %s with %d checkpointed tokens", job.job_id, progress.tokens)

    async def _complete(self, run: Running, gen: Generation) -> None:
        done = completion_of(
            run.job,
            gen,
            run.progress,
            worker_id=self.settings.worker_id,
            spot=self.settings.spot,
            model=self.engine.model_name,
            now_ms=now_ms(self.clock),
        )
        await publish_completion(self.js, done, usage_event(done, recomputed_prompt_tokens=run.progress.recomputed))

    async def start(self) -> None:
        self._owned.push_async_callback(self._wind_down)  # first thing undone: nothing before it is half-started
        for consumer in self.consumers:
            await consumer.start(self.js)
        log.info("worker %s serving pool %s", self.settings.worker_id, self.settings.pool)

    async def _wind_down(self) -> None:
        """Both queues stop pulling at once and share one grace (one after the other, the second would go on
        taking jobs during the first's grace); jobs still running then are handed back by their handlers.
        Then the jobs still queued for this worker alone go back to its pool."""
        if self._abandoned:
            await asyncio.gather(*(consumer.abandon() for consumer in self.consumers))
            return
        await asyncio.gather(*(consumer.stop(self._grace_s) for consumer in self.consumers))
        await self.own.hand_back()

    async def drain(self, grace_s: float | None = None) -> None:
        """Spot notice: :meth:`stop`, giving running jobs ``grace_s`` (default ``settings.grace_s``) to finish
        before they are checkpointed and handed back."""
        if grace_s is not None:
            self._grace_s = grace_s
        await self.stop()

    async def abandon(self) -> None:
        """Stop as a SIGKILLed machine would: no ack, nak, hand-back or heartbeat ever again.

        JetStream redelivers the abandoned jobs after ``ack_wait``; benchmarks and tests use this to time that path.
        """
        self._abandoned = True
        await self.stop()

    async def stop(self) -> None:
        await self._owned.aclose()
