"""``queued_first``: a subscription's received messages handed over without a task each, on a real nats-server."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.client import Client
from nats.errors import ConnectionClosedError
from nats.errors import TimeoutError as NatsTimeout

from costwise.messaging import connect, queued_first


async def test_received_messages_come_in_order_then_an_empty_queue_waits_as_before(
    nc: Client, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = queued_first(await nc.subscribe(f"queued.{unique}"))
    for i in range(5):
        await nc.publish(f"queued.{unique}", str(i).encode())
    await nc.flush()
    await asyncio.sleep(0.05)  # all five received: each is taken from the queue, no task started to wait for it
    tasks: list[object] = []
    monkeypatch.setattr(asyncio, "create_task", lambda coro, **kw: tasks.append(coro) or coro.close())
    assert [(await sub.next_msg(timeout=1)).data for _ in range(5)] == [b"0", b"1", b"2", b"3", b"4"]
    monkeypatch.undo()
    assert tasks == []
    assert sub.pending_msgs == 0 and sub.pending_bytes == 0
    with pytest.raises(NatsTimeout):  # nats-py's own error, as callers (fetch) expect
        await sub.next_msg(timeout=0.05)
    later = asyncio.create_task(sub.next_msg(timeout=5))
    await nc.publish(f"queued.{unique}", b"5")
    assert (await later).data == b"5"
    await sub.unsubscribe()


async def test_a_close_still_wakes_a_waiting_reader(nats_url: str, unique: str) -> None:
    nc = await connect(nats_url, name="queued")
    sub = queued_first(await nc.subscribe(f"queued.{unique}"))
    waiting = asyncio.create_task(sub.next_msg(timeout=30))
    await asyncio.sleep(0.05)
    await nc.close()
    with pytest.raises((ConnectionClosedError, asyncio.CancelledError)):
        await asyncio.wait_for(waiting, 5)
