"""Cluster failover (issue 15): SIGKILL the node leading the requests stream, later the one leading the results
stream, of a 3-node JetStream cluster while hundreds of requests are in flight; each node is restarted afterwards,
as an operator would.

Cache, router, billing and a provider worker (against a local fake OpenAI server, so the run measures the bus and
the services, not a model) run in this process, each on its own connection to the cluster's seed list.
``scenario`` is shared with tests/test_cluster_chaos.py; ``run`` is ``costwise-bench cluster-failover``.

The load is held at each kill's share while the cluster catches up, then its window is refilled and the leader killed:
without the hold, a short run (the test's 1,000 requests) could land every result while the restarted node caught up,
and the kill then found nothing in flight to resume (the "stall" of issue 15's withheld test).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from costwise.billing import BillingSettings, Ledger, Line, open_ledger
from costwise.billing import build as build_billing
from costwise.cache import CacheSettings
from costwise.cache import build as build_cache
from costwise.catalog import Catalog, Provider, Tier
from costwise.contracts import ChatMessage, InferenceRequest, Result, SamplingParams, decode, subjects
from costwise.messaging import connect, ensure_streams, publish
from costwise.provider import ProviderSettings
from costwise.provider import build as build_provider
from costwise.router import RouterSettings
from costwise.router import build as build_router
from costwise.testing import FakeOpenAI, NatsCluster

log = logging.getLogger(__name__)

# Whose leader dies once this share of the requests is published (and a window more): load before, between and after.
KILLS = ((subjects.REQUESTS.name, 0.2), (subjects.RESULTS.name, 0.5))
ONE_LINE_SET = Counter({"attempt": 1, "result": 1})  # the provider's usage event, then the result
POLL_S = 0.1
CHUNK = 50  # requests published at once (each waits for its PubAck)
PATIENCE_S = 120.0  # generous: a pipeline that never resumes fails the run instead of hanging it
RESTART_S = 30.0  # an operator's reaction time: past it the node comes back even if nothing flows without it
QUIET_S = 40.0  # no new result for this long (past ack_wait's 30 s redeliveries): what is missing is lost


@dataclass
class Kill:
    stream: str
    server: str
    at: float
    """Epoch seconds of the SIGKILL."""
    in_flight: int
    """Requests published and without a result when the node died."""


@dataclass
class Outcome:
    requests: list[str]
    published: set[str]
    """The requests the requests stream acknowledged (the load stops publishing while too few results come)."""
    stored: dict[str, int]
    """Results stored per request id (the results stream's per-subject counts)."""
    landed: dict[str, float]
    """When each request's first result was stored (the stream's own timestamp, epoch seconds)."""
    statuses: Counter[str]
    ledger: dict[str, Counter[str]]
    """Ledger lines per request id, by kind."""
    kills: list[Kill]

    @property
    def lost(self) -> int:
        """Published requests with no result."""
        return sum(1 for rid in self.published if not self.stored.get(rid))

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.stored.values() if n > 1)

    @property
    def ledger_mismatches(self) -> int:
        """Requests whose ledger lines are not exactly one attempt and one result."""
        return sum(1 for rid in self.requests if self.ledger.get(rid) != ONE_LINE_SET)

    def resume_s(self, kill: Kill) -> float | None:
        """From the kill to the next result landing."""
        after = [t for t in self.landed.values() if t > kill.at]
        return round(min(after) - kill.at, 2) if after else None

    def longest_pause_s(self, kill: Kill, within_s: float = 30.0) -> float:
        """The longest time without a result landing in the ``within_s`` after the kill (a second stall after a
        first result shows here, not in ``resume_s``)."""
        times = sorted(t for t in self.landed.values() if kill.at < t < kill.at + within_s)
        edges = [kill.at, *times]
        return round(max(b - a for a, b in itertools.pairwise(edges)), 2) if times else within_s

    def rates(self) -> tuple[float | None, float | None]:
        """p50 of results per whole second before the first kill and after the last one resumed."""
        counts = Counter(int(t) for t in self.landed.values())
        first, last = min(counts), max(counts)
        resumed = self.kills[-1].at + (self.resume_s(self.kills[-1]) or 0)
        before = [counts[s] for s in range(first + 1, int(self.kills[0].at))]
        after = [counts[s] for s in range(int(resumed) + 1, last)]
        return (statistics.median(before) if before else None, statistics.median(after) if after else None)

    def summary(self) -> dict[str, Any]:
        before, after = self.rates()
        return {
            "requests": len(self.requests),
            "published": len(self.published),
            "lost": self.lost,
            "duplicates": self.duplicates,
            "not_ok": sum(n for status, n in self.statuses.items() if status != "ok"),
            "ledger_mismatches": self.ledger_mismatches,
            "kills": [
                {"leader_of": k.stream, "server": k.server, "in_flight": k.in_flight, "resume_s": self.resume_s(k)}
                | {"longest_pause_s": self.longest_pause_s(k)}
                for k in self.kills
            ],
            "results_per_s_p50_before": before,
            "results_per_s_p50_after": after,
        }


class _Load:
    """Publishes ``total`` requests, keeping ``window`` of them in flight (published, no result stored yet)."""

    def __init__(self, js: JetStreamContext, tenant: str, total: int, window: int) -> None:
        self.js, self.tenant, self.window = js, tenant, window
        self.ids = [f"f{i}" for i in range(total)]
        self.stored: dict[str, int] = {}
        self.published: set[str] = set()
        self.gate = total
        """Publishes only requests before this index (the chaos holds the load here while the cluster catches up)."""
        self.last_change = time.monotonic()
        self.progress = asyncio.Event()  # set whenever more results are stored
        self.stop = False  # every loop checks it: nats-py may swallow a cancellation on Python 3.11

    @property
    def done(self) -> int:
        return len(self.stored)

    @property
    def in_flight(self) -> int:
        return len(self.published) - self.done

    def hold_at(self, gate: int) -> None:
        self.gate = gate
        self.progress.set()

    async def publish_all(self) -> None:
        for start in range(0, len(self.ids), CHUNK):
            while not self.stop and (start >= self.done + self.window or start >= self.gate):
                self.progress.clear()
                with contextlib.suppress(TimeoutError):  # wakes now and then to see ``stop``
                    await asyncio.wait_for(self.progress.wait(), 1.0)
            await asyncio.gather(*(self._publish(rid) for rid in self.ids[start : start + CHUNK]))

    async def _publish(self, rid: str) -> None:
        question = [ChatMessage(role="user", content=f"What is failover question {rid}?")]
        req = InferenceRequest(request_id=rid, tenant=self.tenant, messages=question, sampling=SamplingParams())
        while not self.stop:
            try:  # while the requests stream elects a leader no ack comes: retry, the msg-id keeps one copy
                await publish(self.js, subjects.requests(self.tenant), req, msg_id=subjects.dedup_id(self.tenant, rid))
                self.published.add(rid)
                return
            except Exception:
                await asyncio.sleep(0.2)

    async def watch(self) -> None:
        """Keep ``stored`` current from the results stream (it fails while the stream elects a leader)."""
        while not self.stop:
            with contextlib.suppress(Exception):
                info = await self.js.stream_info(subjects.RESULTS.name, subjects_filter=self.tenant_results)
                # one subject per request: costwise.v1.results.<tenant>.<request id>
                stored = {s.rsplit(".", 1)[1]: n for s, n in (info.state.subjects or {}).items()}
                if stored != self.stored:
                    self.stored, self.last_change = stored, time.monotonic()
                    self.progress.set()
            await asyncio.sleep(POLL_S)

    def settled(self) -> bool:
        """Every request has a result, or none came for ``QUIET_S`` (the rest will not come)."""
        return self.done >= len(self.ids) or time.monotonic() - self.last_change > QUIET_S

    @property
    def tenant_results(self) -> str:
        return subjects.tenant_results(self.tenant)


async def _until(ready: Callable[[], bool], what: str, timeout: float = PATIENCE_S) -> None:
    try:
        async with asyncio.timeout(timeout):
            while True:  # the conditions are other processes' state, read by polling
                if ready():
                    return
                await asyncio.sleep(POLL_S)
    except TimeoutError:
        raise TimeoutError(f"no {what} within {timeout} s") from None


async def _chaos(cluster: NatsCluster, js: JetStreamContext, load: _Load) -> list[Kill]:
    kills = []
    total = len(load.ids)
    held = [int(share * total) for _, share in KILLS]
    load.hold_at(held[0])
    for (stream, _), at, gate in zip(KILLS, held, [*held[1:], total], strict=True):
        await _until(lambda: len(load.published) >= at, f"{at} requests published")  # noqa: B023
        await cluster.caught_up(js, timeout=PATIENCE_S)
        load.hold_at(gate)  # refill the window, so the kill lands on requests in every stage
        refilled = min(gate, at + load.window)
        await _until(lambda: len(load.published) >= refilled, f"{refilled} requests published")  # noqa: B023
        kills.append(await _kill(cluster, js, load, stream))
    return kills


async def _kill(cluster: NatsCluster, js: JetStreamContext, load: _Load, stream: str) -> Kill:
    """SIGKILL ``stream``'s leader; restart it once results flow again (or after RESTART_S, as an operator would)."""
    victim = await cluster.leader_of(js, stream)
    done = load.done
    kill = Kill(stream, victim.name or "", time.time(), load.in_flight)
    victim.stop(kill=True)
    log.info("killed %s, leader of %s, at %d results, %d in flight", victim.name, stream, done, kill.in_flight)
    what = f"result after killing {victim.name} (leader of {stream})"
    with contextlib.suppress(TimeoutError):
        await _until(lambda: load.done > done, what, timeout=RESTART_S)
    victim.start()
    await _until(lambda: load.done > done, what)
    return kill


@contextlib.asynccontextmanager
async def _services(url: str, tmp: Path, backend: str, ledger: Ledger) -> AsyncIterator[None]:
    """Cache (exact only), router, provider worker and billing in this process, each on its own connection."""
    fake = await FakeOpenAI(answer="The answer is forty-two.").start()
    provider = Provider(
        name=backend, model="gpt-fake", base_url=fake.url, usd_per_m_input=0.5, usd_per_m_output=1.5, concurrency=64
    )
    catalog = Catalog(tiers=[Tier(name="api", backends=[backend])], backends=[provider], baseline=backend)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(fake.stop)
        for build in (
            lambda: build_billing(BillingSettings(nats_url=url), catalog=catalog, ledger=ledger),
            lambda: build_provider(ProviderSettings(nats_url=url, backend=backend, grace_s=0), catalog=catalog),
            lambda: build_router(RouterSettings(nats_url=url), catalog=catalog),
            lambda: build_cache(CacheSettings(nats_url=url, semantic=False, data_dir=str(tmp / "cache"))),
        ):
            service: Any = await build()
            stack.push_async_callback(service.stop)
            await service.start()
        yield


async def scenario(cluster: NatsCluster, tmp: Path, *, tenant: str, total: int, window: int) -> Outcome:
    """Make ``cluster``'s streams R3, run the load through both kills and return what landed where."""
    url = ",".join(cluster.urls)  # the seed list: each connection fails over to a surviving node
    nc = await connect(url, name="failover-load")
    js = nc.jetstream()
    ledger = await asyncio.to_thread(open_ledger, f"sqlite:///{tmp / 'ledger.db'}")
    load = _Load(js, tenant, total, window)
    try:
        await ensure_streams(js, replicas=3)
        async with _services(url, tmp, f"{tenant}-api", ledger):
            tasks = [asyncio.create_task(load.watch()), asyncio.create_task(load.publish_all())]
            try:
                kills = await _chaos(cluster, js, load)
                await _until(load.settled, "end of the results", timeout=PATIENCE_S + QUIET_S)
                lines = await _ledger_settled(ledger, tenant, 2 * load.done)
            finally:
                load.stop = True
                await asyncio.gather(*tasks, return_exceptions=True)
        # leave the cluster whole: the last restarted node has rejoined every stream
        await cluster.caught_up(js, timeout=PATIENCE_S)
        landed, statuses = await _landed(js, load.tenant_results, sum(load.stored.values()))
    finally:
        await asyncio.to_thread(ledger.close)
        await nc.close()
    outcome = Outcome(load.ids, load.published, load.stored, landed, statuses, lines, kills)
    log.info("cluster failover: %s", outcome.summary())  # a test's log shows the timings of a run that passed
    return outcome


async def _ledger_settled(ledger: Ledger, tenant: str, expected: int) -> dict[str, Counter[str]]:
    """The tenant's ledger lines by request and kind, once ``expected`` lines are in (or 30 s passed)."""
    lines: list[Line] = []
    for _ in range(300):
        lines = await asyncio.to_thread(ledger.lines, tenant=tenant)
        if len(lines) >= expected:
            break
        await asyncio.sleep(POLL_S)
    by_request: dict[str, Counter[str]] = {}
    for line in lines:
        by_request.setdefault(line.request_id, Counter())[line.kind] += 1
    return by_request


async def _landed(js: JetStreamContext, subject: str, count: int) -> tuple[dict[str, float], Counter[str]]:
    """Each request's first stored result: when the stream stored it, and its status."""
    sub = await js.subscribe(subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    landed: dict[str, float] = {}
    statuses: Counter[str] = Counter()
    try:
        for _ in range(count):
            msg = await sub.next_msg(timeout=10)
            result = decode(msg.data, Result)
            if result.request_id not in landed:
                landed[result.request_id] = msg.metadata.timestamp.timestamp()
                statuses[result.status] += 1
    finally:
        await sub.unsubscribe()
    return landed, statuses


async def run(requests: int, window: int) -> dict[str, Any]:
    """``costwise-bench cluster-failover``: the scenario on a fresh cluster of its own."""
    with tempfile.TemporaryDirectory(prefix="costwise-bench-failover-") as tmp:
        cluster = NatsCluster(Path(tmp) / "cluster").start()
        try:
            t0 = time.monotonic()
            outcome = await scenario(cluster, Path(tmp), tenant="bench", total=requests, window=window)
            elapsed = time.monotonic() - t0
        finally:
            cluster.stop()
    return {"window": window, "elapsed_s": round(elapsed, 1)} | outcome.summary()
