"""Router → vLLM worker → usage + result → billing, on a real nats-server, real vLLM and a real ledger."""

from __future__ import annotations

import asyncio
from typing import Any

from nats.aio.client import Client as Nats

from costwise.billing import BillingSettings, Ledger, ledger_report
from costwise.billing import build as build_billing
from costwise.catalog import Catalog, Tier, WorkerPool
from costwise.client import Client
from costwise.contracts import ChatMessage, InferenceRequest, SamplingParams, subjects
from costwise.messaging import publish
from costwise.router import RouterSettings
from costwise.router import build as build_router
from costwise.worker import WorkerSettings
from costwise.worker import build as build_worker


async def test_ledger_tokens_equal_the_engines_for_every_request(
    nats_url: str, nc: Nats, engine: Any, sqlite_ledger: Ledger, unique: str
) -> None:
    pool = WorkerPool(name=unique, model="tiny", gpu_usd_per_hour=0.5, prefill_tokens_per_s=500, decode_tokens_per_s=50)
    catalog = Catalog(tiers=[Tier(name="small", backends=[unique])], backends=[pool], baseline=unique)
    billing = await build_billing(BillingSettings(nats_url=nats_url), nc=nc, catalog=catalog, ledger=sqlite_ledger)
    router = await build_router(RouterSettings(nats_url=nats_url), catalog=catalog)
    worker = await build_worker(WorkerSettings(pool=unique, max_model_len=2048), nc=nc, engine=engine)
    for service in (billing, router, worker):
        await service.start()
    try:
        ids = [f"e2e{i}" for i in range(4)]
        for i, rid in enumerate(ids):
            req = InferenceRequest(
                request_id=rid,
                tenant=unique,
                messages=[ChatMessage(role="user", content="count to " + "ten " * (i + 1))],
                sampling=SamplingParams(max_tokens=4 + 3 * i),
                api_key_id=f"key{i % 2}",  # as the gateway sets it from the authenticated key
            )
            await publish(nc.jetstream(), subjects.route(unique), req, msg_id=subjects.dedup_id(unique, rid))
        results = {rid: await Client(nc).result(unique, rid, timeout=120) for rid in ids}
        deadline = asyncio.get_running_loop().time() + 30
        while len(sqlite_ledger.lines(tenant=unique)) < 2 * len(ids):
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
    finally:
        await worker.drain(0)
        await router.stop()
        await billing.stop()
    lines = sqlite_ledger.lines(tenant=unique)
    for rid, result in results.items():
        (attempt,) = [line for line in lines if line.request_id == rid and line.kind == "attempt"]
        assert (attempt.tokens_in, attempt.tokens_out) == (result.usage.prompt_tokens, result.usage.completion_tokens)
        assert attempt.backend == unique and attempt.amount_nusd > 0 and attempt.engine_us > 0
        assert attempt.api_key_id == result.api_key_id == f"key{ids.index(rid) % 2}"  # the key travelled to the ledger
    report = ledger_report(sqlite_ledger, tenant=unique)
    assert report.requests == len(ids) and report.sources == {"engine": len(ids)}
    assert report.actual_nusd == report.baseline_nusd  # the only backend is the baseline: nothing to save
