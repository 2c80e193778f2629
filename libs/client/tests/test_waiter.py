"""The shared result waiter against a real nats-server: no gap between registering and the result, no consumer per wait."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client as Nats
from nats.js import JetStreamContext

from costwise.client import ResultWaiter
from costwise.contracts import Result, subjects
from costwise.messaging import connect, ensure_streams, publish


async def _answer(js: JetStreamContext, tenant: str, request_id: str) -> None:
    result = Result(request_id=request_id, tenant=tenant, status="ok")
    await publish(js, subjects.results(tenant, request_id), result, msg_id=subjects.dedup_id(tenant, request_id))


async def test_a_result_answered_at_once_from_another_connection_is_never_missed(
    nats_url: str, js: JetStreamContext, unique: str
) -> None:
    # The responder's own connection: its publish can reach the server before anything this side sends.
    await ensure_streams(js)
    responder = await connect(nats_url, name="responder")
    waiter = await ResultWaiter(js).start()
    try:
        for i in range(200):
            async with waiter.expect(unique, f"r{i}") as arriving:
                await _answer(responder.jetstream(), unique, f"r{i}")
                assert (await asyncio.wait_for(arriving, 5)).request_id == f"r{i}"
    finally:
        await waiter.stop()
        await responder.close()


async def test_every_wait_on_one_request_hears_and_no_consumer_is_made_per_wait(
    nc: Nats, js: JetStreamContext, unique: str
) -> None:
    await ensure_streams(js)
    before = len(await js.consumers_info(subjects.RESULTS.name))
    waiter = await ResultWaiter(js).start()
    try:
        async with waiter.expect(unique, "same") as first, waiter.expect(unique, "same") as second:
            waits = [asyncio.create_task(_expect(waiter, unique, f"r{i}")) for i in range(20)]
            await asyncio.sleep(0.1)
            assert len(await js.consumers_info(subjects.RESULTS.name)) == before + 1  # the waiter's one
            for i in range(20):
                await _answer(js, unique, f"r{i}")
            await _answer(js, unique, "same")
            assert sorted(await asyncio.gather(*waits)) == sorted(f"r{i}" for i in range(20))
            assert (await first).request_id == (await second).request_id == "same"
        assert not waiter._waiting  # every finished wait let go of its entry
    finally:
        await waiter.stop()


async def _expect(waiter: ResultWaiter, tenant: str, request_id: str) -> str:
    async with waiter.expect(tenant, request_id) as arriving:
        return (await asyncio.wait_for(arriving, 5)).request_id
