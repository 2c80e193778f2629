"""The client's single-result wait against a real nats-server."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.client import Client as Nats
from nats.js import JetStreamContext

from costwise.client import Client
from costwise.contracts import Result, subjects
from costwise.messaging import ensure_streams, publish


async def _answer(js: JetStreamContext, tenant: str, request_id: str) -> None:
    result = Result(request_id=request_id, tenant=tenant, status="ok")
    await publish(js, subjects.results(tenant, request_id), result, msg_id=subjects.dedup_id(tenant, request_id))


async def test_a_wait_sees_a_result_stored_before_it_and_one_arriving_during_it(
    nc: Nats, js: JetStreamContext, unique: str
) -> None:
    await ensure_streams(js)
    client = Client(nc)
    await _answer(js, unique, "early")
    assert (await client.result(unique, "early", timeout=5)).request_id == "early"

    waiting = asyncio.create_task(client.result(unique, "late", timeout=5))
    await asyncio.sleep(0.2)
    await _answer(js, unique, "late")
    assert (await waiting).request_id == "late"


async def test_waits_leave_no_consumers_behind_and_time_out_clearly(
    nc: Nats, js: JetStreamContext, unique: str
) -> None:
    await ensure_streams(js)
    client = Client(nc)
    for i in range(20):
        waiting = asyncio.create_task(client.result(unique, f"r{i}", timeout=5))
        await asyncio.sleep(0.01)
        await _answer(js, unique, f"r{i}")
        await waiting
    # Other tests' ephemeral consumers come and go on the shared server: count only this tenant's.
    mine = [c for c in await js.consumers_info(subjects.RESULTS.name) if unique in (c.config.filter_subject or "")]
    assert mine == []
    with pytest.raises(TimeoutError, match="no result for never"):
        await client.result(unique, "never", timeout=0.3)
