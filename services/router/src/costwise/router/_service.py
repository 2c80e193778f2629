"""The router's handlers: request → job, completion → result or next attempt."""

from __future__ import annotations

import contextlib
import math
from decimal import Decimal

import msgspec
from nats.aio.client import Client
from opentelemetry.trace import Tracer

from costwise.budget import BudgetExceeded, Budgets
from costwise.catalog import AUTO, Catalog, Tier
from costwise.contracts import (
    Attempt,
    Clock,
    Completion,
    ErrorCode,
    InferenceRequest,
    Job,
    MaxDeliveriesAdvisory,
    Result,
    now_ms,
    subjects,
)
from costwise.contracts.subjects import ROUTER_ADVISORIES, ROUTER_COMPLETIONS, ROUTER_HEADS, ROUTER_ROUTE
from costwise.messaging import Consumer, Refusal, ack_current, publish, reject_current
from costwise.telemetry import record_result

from ._advisories import dead_letter_job
from ._affinity import Affinity, prefix_hash
from ._arbitrage import choose
from ._capacity import Capacity
from ._learned import GatedVerifier, SmallTierOdds, prompt_of
from ._outcome import attempt_of, error_result, ok_result
from .learned import check_response
from .settings import RouterSettings

__all__ = ["SERVICE", "Router"]

SERVICE = "router"


class Router:
    """Turns requests into jobs and completions into results or next attempts.

    Stateless between messages (a job carries its earlier attempts), so run as many as you like.
    """

    def __init__(
        self,
        settings: RouterSettings,
        nc: Client,
        catalog: Catalog,
        budgets: Budgets,
        capacity: Capacity,
        *,
        clock: Clock,
        owned: contextlib.AsyncExitStack,
        odds: SmallTierOdds | None = None,
        verifier: GatedVerifier | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.settings = settings
        self.nc = nc
        self.js = nc.jetstream()
        self.catalog = catalog
        self.budgets = budgets
        self.capacity = capacity
        self.affinity = Affinity(settings.affinity_entries)
        self.odds = odds
        self.verifier = verifier
        self.clock = clock
        self._owned = owned
        """What ``build`` opened; ``start`` adds what it starts, so ``stop`` closes it all in reverse."""
        self.consumers = [
            Consumer(spec, handler, service=SERVICE, concurrency=concurrency, tracer=tracer)
            for spec, handler, concurrency in (
                (ROUTER_ROUTE, self.on_request, settings.concurrency),
                (ROUTER_COMPLETIONS, self.on_completion, settings.concurrency),
                (ROUTER_ADVISORIES, self.on_max_deliveries, 1),
            )
        ]

    def _now_ms(self) -> int:
        return now_ms(self.clock)

    async def on_request(self, req: InferenceRequest) -> None:
        start = await self._first_tier(req)
        if isinstance(start, Refusal):
            await reject_current(self.js, service=SERVICE, code=start.code, reason=start.reason)
            return
        tier, stage = start
        job = Job(
            job_id=req.request_id, request=req, pool="-", tier=tier.name, stage=stage, prefix_hash=prefix_hash(req)
        )
        refusal = await self._dispatch(job, tier)
        if refusal is not None:
            await reject_current(self.js, service=SERVICE, code=refusal.code, reason=refusal.reason)
            return
        await ack_current()

    async def _first_tier(self, req: InferenceRequest) -> tuple[Tier, str] | Refusal:
        """Where a request starts: ``auto`` cascades up from the first tier (or the second, when the learned
        router doubts the first); a tier, alias or model is served as asked."""
        batch = req.priority == "batch"
        if req.model == AUTO:
            tier = self.catalog.tiers[0]
            if batch:
                return tier, "batch"
            above = self.catalog.next_tier(tier.name)
            if above is not None and await self._skips_small(req):
                tier, above = above, self.catalog.next_tier(above.name)
            return tier, "cascade_small" if above is not None else "direct"
        tier = self._tier(req.model)
        if tier is None:
            known = ", ".join([AUTO, *(t.name for t in self.catalog.tiers), *self.catalog.aliases])
            why = f"model {req.model!r} is neither a tier, an alias nor a model any backend serves (known: {known})"
            return Refusal(ErrorCode.UNKNOWN_POOL, why)
        return tier, "batch" if batch else "direct"

    async def _skips_small(self, req: InferenceRequest) -> bool:
        if self.odds is None:
            return False
        # Where the verifier will judge the small answer, the cascade's operating point applies: its skip threshold
        # was chosen together with the verifier's (a doubtful answer is caught after, so fewer prompts skip).
        verifier = await self.verifier.for_prompt(prompt_of(req)) if self.verifier is not None else None
        return await self.odds.skip_small(req, verifier.direct_below if verifier is not None else None)

    def _tier(self, name: str) -> Tier | None:
        """A catalog tier (or alias), or, for a concrete model name, the backends that serve that model."""
        try:
            return self.catalog.tier(name)
        except KeyError:
            serving = [b.name for b in self.catalog.backends if b.model == name]
            return Tier(name=name, backends=serving) if serving else None

    async def _dispatch(self, job: Job, tier: Tier, *, exclude: set[str] | None = None) -> Refusal | None:
        """Send ``job`` to the best backend of ``tier`` (as its next attempt), or say why none will do."""
        spent = sum(a.cost_usd for a in job.attempts)
        choice = choose(
            tier,
            self.catalog.backend,
            job.request,
            load=self.capacity.load,
            down=self.capacity.down,
            now_ms=self._now_ms(),
            spent_usd=spent,
            exclude=exclude or (),
            prefer=self.affinity.preferred(job.prefix_hash),
        )
        if isinstance(choice, Refusal):
            return choice
        req = job.request
        refusal = await self._admit(req, choice.estimated_cost_usd)
        if refusal is not None:
            return refusal
        attempt = len(job.attempts) + 1
        job_id = req.request_id if attempt == 1 else f"{req.request_id}-{attempt}"
        job = msgspec.structs.replace(
            job, job_id=job_id, pool=choice.backend.name, tier=tier.name, attempt=attempt, routed_ms=self._now_ms()
        )
        await publish(self.js, self._subject(job), job, msg_id=subjects.dedup_id(req.tenant, job_id))
        return None

    def _subject(self, job: Job) -> str:
        """The queue of the worker that served this prefix last while it can take the job now; else the pool's."""
        worker = self.affinity.worker(job.prefix_hash, job.pool)
        if worker and self.capacity.claim(job.pool, worker):
            return subjects.worker_own_jobs(job.pool, worker)
        return subjects.jobs(job.pool)

    async def _admit(self, req: InferenceRequest, estimate_usd: Decimal) -> Refusal | None:
        """Reserve the attempt's worst-case cost against the tenant's budget (and its API key's, if it has one)
        before anything is spent. Each attempt's admission replaces the request's reservation; billing settles
        it from the ledger."""
        verdict = await self.budgets.admit(req.tenant, req.request_id, estimate_usd, api_key_id=req.api_key_id)
        return Refusal(verdict.code, verdict.message) if isinstance(verdict, BudgetExceeded) else None

    async def on_completion(self, done: Completion) -> None:
        job = done.job
        if done.error is None and job.prefix_hash:  # only an answer warms a cache; a failure must not attract
            self.affinity.served(job.prefix_hash, job.pool, done.worker_id)
            self.capacity.watch(job.pool, done.worker_id)
        if done.error is not None:
            why = f"{done.error.code}: {done.error.message}"
            await self._fail_over(job, [*job.attempts, attempt_of(self.catalog, done, "failed", why)])
        elif job.judged:
            await self._judge(done)
        else:
            await self._accept(done, "")
        await ack_current()

    async def _judge(self, done: Completion) -> None:
        req = done.job.request
        floor = self.settings.quality_floor if req.quality_floor is None else req.quality_floor
        prompt = prompt_of(req)
        verdict = check_response(
            done.text,
            done.finish_reason,
            done.logprobs,
            prompt=prompt,
            verifier=await self.verifier.for_prompt(prompt) if self.verifier is not None else None,
            min_mean_logprob=math.log(max(floor, 1e-9)),
            min_token_logprob=self.settings.min_token_logprob,
        )
        if self.odds is not None and done.job.tier == self.catalog.tiers[0].name:  # a verdict on the small tier
            await self.odds.learn(req, verdict.accept)
        checked = f"checks: {'+'.join(verdict.checks)}"
        if verdict.accept:
            await self._accept(done, checked)
            return
        reason = f"{verdict.reason} (confidence {verdict.score:.3f}, floor {floor:.2f}; {checked})"
        job = done.job
        tier = self._next_tier(job.tier)
        escalated = msgspec.structs.replace(
            job,
            stage="cascade_large",
            attempts=[*job.attempts, attempt_of(self.catalog, done, "escalated", reason)],
        )
        if tier is None:
            refusal: Refusal | None = Refusal(ErrorCode.NO_BACKEND_AVAILABLE, "no larger tier")
        else:
            refusal = await self._dispatch(escalated, tier)
        if refusal is not None:  # an answer below the floor beats none: serve it, and say why it was kept
            await self._accept(done, f"{reason}; not escalated: {refusal.reason}")

    def _next_tier(self, name: str | None) -> Tier | None:
        try:
            return self.catalog.next_tier(name or "")
        except ValueError:  # not a catalog tier (a concrete model's backends): nothing to escalate to
            return None

    async def _accept(self, done: Completion, reason: str) -> None:
        route = [*done.job.attempts, attempt_of(self.catalog, done, "accepted", reason)]
        await self._publish_result(ok_result(self.catalog, done, route, self._now_ms()), done.job.request.model)

    async def _fail_over(self, job: Job, route: list[Attempt]) -> None:
        """The backend failed this attempt: try the tier's next-best backend, or give the caller a typed error."""
        tried = {a.backend for a in route if a.tier == job.tier}
        tier = self._tier(job.tier or job.request.model)
        retry = msgspec.structs.replace(job, attempts=route)
        if tier is None:
            refusal: Refusal | None = Refusal(ErrorCode.NO_BACKEND_AVAILABLE, f"tier {job.tier!r} is unknown")
        else:
            refusal = await self._dispatch(retry, tier, exclude=tried)
        if refusal is not None:
            message = f"{refusal.reason}; last failure: {route[-1].reason}"
            await self._publish_result(
                error_result(job, route, refusal.code, message, self._now_ms()), job.request.model
            )

    async def _publish_result(self, result: Result, requested_model: str) -> None:
        # The baseline is the answer's tokens at the no-lever price (billing's ledger has the exact split by lever).
        baseline = float(self.catalog.baseline_price.cost(result.usage))
        record_result(result, requested_model=requested_model, baseline_usd=baseline)
        # Deduplicated by tenant + request id: a redelivered completion (or a second worker's) yields one result.
        tenant, request_id = result.tenant, result.request_id
        await publish(
            self.js, subjects.results(tenant, request_id), result, msg_id=subjects.dedup_id(tenant, request_id)
        )

    async def on_max_deliveries(self, advisory: MaxDeliveriesAdvisory) -> None:
        """A job used up its deliveries without an answer (e.g. its workers kept dying): tell the caller."""
        await dead_letter_job(self.js, advisory, service=SERVICE)
        await ack_current()

    async def start(self) -> None:
        if self.odds is not None:
            self.odds.persist(await self.js.key_value(ROUTER_HEADS.bucket), flush_s=self.settings.heads_flush_s)
            self._owned.push_async_callback(self.odds.close)  # the last write of what it learned, before the drain
        await self.capacity.start(self.js)  # read every backend once before routing
        self._owned.push_async_callback(self.capacity.stop)
        for consumer in self.consumers:
            await consumer.start(self.js)
            self._owned.push_async_callback(consumer.stop)

    async def stop(self) -> None:
        await self._owned.aclose()
