"""The spot-safe pull loop: fetch as many jobs as the engine has free slots, heartbeat, hand back on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import msgspec
from nats.aio.client import Client as Nats
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from opentelemetry import context as otel_context
from opentelemetry.trace import NoOpTracerProvider, SpanKind, TracerProvider, set_span_in_context

from costwise.contracts import (
    Completion,
    DecodeError,
    EngineTimings,
    ErrorCode,
    Job,
    Usage,
    UsageEvent,
    decode,
    subjects,
)
from costwise.messaging import connect, ensure_consumer, ensure_streams, give_up, keep_alive, publish, pull_into_slots
from costwise.telemetry import extract

from ._own import OwnQueue
from ._running import Running, retry_links
from .engine import Engine, Generation, Progress
from .settings import WorkerSettings

__all__ = ["Worker", "build"]

log = logging.getLogger("costwise.worker")
SERVICE = "worker"


class Worker:
    def __init__(
        self,
        settings: WorkerSettings,
        nc: Nats,
        engine: Engine,
        tracer_provider: TracerProvider | None,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.nc = nc
        self.js = nc.jetstream()
        self.engine = engine
        self.tracer = (tracer_provider or NoOpTracerProvider()).get_tracer("costwise.worker")
        self.clock = clock
        self.consumer = subjects.worker_jobs(
            settings.pool, ack_wait_s=settings.ack_wait_s, max_deliver=settings.max_deliver
        )
        own = subjects.worker_own(
            settings.pool,
            settings.worker_id,
            ack_wait_s=settings.ack_wait_s,
            max_deliver=settings.max_deliver,
            idle_s=settings.own_idle_s,
        )
        self.own = OwnQueue(self.js, own, settings.pool)
        self.running: dict[int, Running] = {}
        self._slot_freed = asyncio.Event()
        self._stopping = False
        self._loops: list[asyncio.Task[None]] = []
        self._psub: JetStreamContext.PullSubscription | None = None

    async def start(self) -> None:
        await ensure_streams(self.js)  # idempotent: any service may be the first one up
        await ensure_consumer(self.js, self.consumer)
        self._psub = await self.js.pull_subscribe_bind(self.consumer.durable, self.consumer.stream)
        own = self.own.pull(free=self._free, freed=self._slot_freed, stopping=lambda: self._stopping, admit=self._admit)
        self._loops = [
            asyncio.create_task(self._pull(self._psub), name=f"pull-{self.settings.pool}"),
            asyncio.create_task(own, name=f"pull-{self.own.spec.durable}"),
        ]
        log.info("worker %s serving pool %s", self.settings.worker_id, self.settings.pool)

    async def _pull(self, psub: JetStreamContext.PullSubscription) -> None:
        await pull_into_slots(
            psub,
            free=self._free,
            freed=self._slot_freed,
            stopping=lambda: self._stopping,  # fetched while SIGTERM arrived: handed straight back
            admit=self._admit,
        )

    def _free(self) -> int:
        return self.settings.max_in_flight - len(self.running)

    async def _admit(self, msg: Msg) -> None:
        try:
            job = decode(msg.data, Job)
        except DecodeError as exc:
            await self._reject(msg, ErrorCode.MALFORMED_MESSAGE, f"invalid job payload: {exc}")
            return
        run = Running(msg, job, Progress.from_checkpoint(job.checkpoint))
        run.task = asyncio.create_task(self._run(run), name=job.job_id)
        self.running[id(run)] = run

    async def _reject(self, msg: Msg, code: ErrorCode, reason: str, run: Running | None = None) -> None:
        if run is not None:
            run.settled = True
        await give_up(self.js, msg, service=SERVICE, code=code, reason=reason)

    async def _run(self, run: Running) -> None:
        heartbeat = asyncio.create_task(keep_alive(run.msg, self.settings.heartbeat_s))
        try:
            ctx = extract(run.msg.headers)
            with self.tracer.start_as_current_span(
                "worker.job", context=ctx, kind=SpanKind.CONSUMER, links=retry_links(run, ctx)
            ) as span:
                run.trace = set_span_in_context(span)
                span.set_attribute("gen_ai.request.model", self.engine.model_name)
                span.set_attribute("costwise.job_id", run.job.job_id)
                # A redelivery (a worker died) or a resumed checkpoint (a worker was preempted) is another try.
                span.set_attribute("messaging.message.delivery_count", run.msg.metadata.num_delivered)
                span.set_attribute(
                    "costwise.resumed_tokens", len(run.job.checkpoint.token_ids) if run.job.checkpoint else 0
                )
                await self._serve(run)
        except asyncio.CancelledError:
            raise  # preemption: drain() checkpoints and hands the job back
        except Exception as exc:
            await self._failed(run, exc)
        finally:
            heartbeat.cancel()
            self.running.pop(id(run), None)
            self._slot_freed.set()

    async def _serve(self, run: Running) -> None:
        job = run.job
        if job.pool != self.settings.pool:
            why = f"job for pool {job.pool!r} reached pool {self.settings.pool!r}"
            await self._reject(run.msg, ErrorCode.UNKNOWN_POOL, why, run)
            return
        late_ms = int(self.clock() * 1000) - (job.request.deadline_ms or 1 << 62)
        if late_ms > 0:  # nobody is waiting for this answer any more: spend no GPU time on it
            why = f"the deadline passed {late_ms} ms before a worker could start the job"
            await self._reject(run.msg, ErrorCode.DEADLINE_EXCEEDED, why, run)
            return
        prompt_ids = self.engine.prompt_ids(job.request.messages)
        need = len(prompt_ids) + job.request.sampling.max_tokens
        if need > self.engine.max_model_len:
            why = (
                f"prompt has {len(prompt_ids)} tokens + max_tokens {job.request.sampling.max_tokens}"
                f" = {need}; {self.engine.model_name} takes {self.engine.max_model_len}"
            )
            await self._reject(run.msg, ErrorCode.PROMPT_TOO_LONG, why, run)
            return
        gen = await self.engine.generate(prompt_ids, job.request.sampling, run.progress)
        await self._complete(run, gen)

    async def _complete(self, run: Running, gen: Generation) -> None:
        job, progress = run.job, run.progress
        usage = Usage(
            prompt_tokens=gen.prompt_tokens,
            completion_tokens=len(progress.token_ids),
            cached_prompt_tokens=gen.cached_prompt_tokens,
        )
        now_ms = int(self.clock() * 1000)
        done = Completion(
            job=job,
            worker_id=self.settings.worker_id,
            spot=self.settings.spot,
            model=self.engine.model_name,
            text=gen.text,
            finish_reason=gen.finish_reason,  # type: ignore[arg-type]
            usage=usage,
            logprobs=progress.summary(),
            timings=EngineTimings(first_token_s=progress.first_token_s or 0.0, engine_s=gen.engine_s),
            resumed_tokens=progress.resumed,
            completed_ms=now_ms,
        )
        event = UsageEvent(
            request_id=job.request.request_id,
            job_id=job.job_id,
            tenant=job.request.tenant,
            pool=job.pool,
            worker_id=self.settings.worker_id,
            spot=self.settings.spot,
            model=self.engine.model_name,
            usage=usage,
            engine_s=gen.engine_s,
            ts_ms=now_ms,
            stage=job.stage,
            attempt=job.attempt,
            api_key_id=job.request.api_key_id,
            recomputed_prompt_tokens=progress.recomputed,
        )
        # Ack only after both are stored: a crash before the ack redelivers the job, and the job-id msg-ids
        # make the repeats no-ops. The two PubAcks are awaited together (one round trip, not two).
        tenant = job.request.tenant
        await asyncio.gather(
            publish(self.js, subjects.completions(job.pool), done, msg_id=subjects.dedup_id(tenant, job.job_id)),
            publish(self.js, subjects.usage(tenant), event, msg_id=subjects.dedup_id(tenant, job.job_id, "usage")),
        )
        run.settled = True
        await run.msg.ack()

    async def _failed(self, run: Running, exc: Exception) -> None:
        delivered = run.msg.metadata.num_delivered
        if delivered >= self.settings.max_deliver:
            await self._reject(
                run.msg, ErrorCode.ENGINE_ERROR, f"failed {delivered} times; last: {type(exc).__name__}: {exc}"
            )
        else:
            log.exception("job %s failed on delivery %d; retrying", run.job.job_id, delivered)
            await run.msg.nak(delay=min(0.5 * 2**delivered, 10.0))

    async def drain(self, grace_s: float | None = None) -> None:
        """Spot notice: stop pulling now, let jobs finish for ``grace_s``, checkpoint and hand back the rest,
        then hand the jobs still queued for this worker alone back to its pool."""
        self._stop_pulling()
        grace = self.settings.grace_s if grace_s is None else grace_s
        tasks = [r.task for r in self.running.values() if r.task]
        if tasks and grace > 0:
            await asyncio.wait(tasks, timeout=grace)
        await asyncio.gather(*(self._hand_back(r) for r in list(self.running.values())))
        # Each ends within one fetch timeout of _stopping; one that failed must not stop the hand-back below.
        await asyncio.gather(*self._loops, return_exceptions=True)
        await self.own.hand_back()  # after the in-flight hand-back: those acks need the own consumer
        await self._unsubscribe()

    async def abandon(self) -> None:
        """Stop as a SIGKILLed machine would: no ack, nak, hand-back or heartbeat ever again.

        JetStream redelivers the abandoned jobs after ``ack_wait``; benchmarks use this to time that path.
        """
        self._stop_pulling()
        for run in list(self.running.values()):
            if run.task:
                run.task.cancel()
        await self._unsubscribe()
        await self.own.unsubscribe()

    def _stop_pulling(self) -> None:
        self._stopping = True
        self._slot_freed.set()  # wakes a pull loop waiting for a free slot, so it sees _stopping

    async def _unsubscribe(self) -> None:
        # Explicitly: draining the connection with a pull subscription still registered waits out
        # nats-py's 30 s drain timeout.
        if self._psub:
            await self._psub.unsubscribe()
            self._psub = None

    async def _hand_back(self, run: Running) -> None:
        if run.task:
            run.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run.task
        if run.settled:  # it finished (or failed) while we were cancelling it
            return
        ckpt = run.progress.checkpoint(self.engine.decode(run.progress.token_ids), self.settings.worker_id)
        resumed = msgspec.structs.replace(run.job, checkpoint=ckpt)
        seq = run.msg.metadata.sequence.stream
        # A new message (not nak) because the checkpoint must travel with the job; publish first, ack second.
        # It carries this attempt's span as its parent: the resuming worker's span follows it in the request's trace.
        token = otel_context.attach(run.trace or extract(run.msg.headers))
        try:
            await publish(
                self.js,
                subjects.jobs(run.job.pool),
                resumed,
                msg_id=subjects.dedup_id(run.job.request.tenant, run.job.job_id, "ckpt", str(seq)),
            )
        finally:
            otel_context.detach(token)
        await run.msg.ack()
        log.info("handed back %s with %d checkpointed tokens", run.job.job_id, len(ckpt.token_ids))

    async def stop(self) -> None:
        await self.drain()
        await self.nc.drain()


async def build(
    settings: WorkerSettings,
    *,
    nc: Nats | None = None,
    engine: Engine | None = None,
    tracer_provider: TracerProvider | None = None,
    clock: Callable[[], float] = time.time,
) -> Worker:
    """Composition root: connect (unless given ``nc``) and load the engine (unless given one)."""
    nc = nc or await connect(settings.nats_url, name=f"worker-{settings.worker_id}")
    if engine is None:
        engine = await asyncio.to_thread(Engine.load, settings)
        await engine.warm_up()
    return Worker(settings, nc, engine, tracer_provider, clock)
