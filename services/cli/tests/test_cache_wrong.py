"""``costwise cache wrong``: stores the report for a cache hit, refuses (exit 1, one line) anything else."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.client import Client as Nats

from costwise.cli.__main__ import main
from costwise.client import new_request_id
from costwise.contracts import CacheHit, CacheWrongHit, Output, Result, subjects
from costwise.messaging import publish
from costwise.testing import first_stored


async def _result(nc: Nats, tenant: str, source: str) -> str:
    request_id = new_request_id()
    hit = CacheHit(kind="semantic", cached_request_id=new_request_id(), similarity=0.93)
    result = Result(
        request_id=request_id,
        tenant=tenant,
        status="ok",
        output=Output(text="42", finish_reason="stop"),
        source=source,  # type: ignore[arg-type]
        cache=hit if source.startswith("cache_") else None,
    )
    msg_id = subjects.dedup_id(tenant, request_id)
    await publish(nc.jetstream(), subjects.results(tenant, request_id), result, msg_id=msg_id)
    return request_id


async def _cache_wrong(nats_url: str, tenant: str, request_id: str) -> int:
    argv = ["--nats", nats_url, "cache", "wrong", "--tenant", tenant, "--request-id", request_id, "--reason", "no"]
    return await asyncio.to_thread(main, argv)


async def test_a_cache_hit_is_reported_on_the_tenants_control_subject(
    nc: Nats, nats_url: str, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    request_id = await _result(nc, unique, "cache_semantic")
    assert await _cache_wrong(nats_url, unique, request_id) == 0
    stored = await first_stored(
        nc.jetstream(), subjects.cache_control(unique), CacheWrongHit, lambda c: c.request_id == request_id, timeout=10
    )
    assert stored == CacheWrongHit(tenant=unique, request_id=request_id, reason="no")
    assert "reported" in capsys.readouterr().out
    info = await nc.jetstream().stream_info(subjects.CONTROL.name, subjects_filter=subjects.cache_control(unique))
    assert info.state.subjects == {subjects.cache_control(unique): 1}


async def test_a_request_the_cache_did_not_answer_or_unknown_is_refused(
    nc: Nats, nats_url: str, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    answered = await _result(nc, unique, "engine")
    assert await _cache_wrong(nats_url, unique, answered) == 1
    assert "was answered by engine, not the cache" in capsys.readouterr().err
    assert await _cache_wrong(nats_url, unique, new_request_id()) == 1
    assert "has no result: nothing to report" in capsys.readouterr().err
    assert await _cache_wrong(nats_url, "a.b", answered) == 1  # a tenant that is no subject token
    assert "invalid report" in capsys.readouterr().err
    info = await nc.jetstream().stream_info(subjects.CONTROL.name, subjects_filter=subjects.cache_control(unique))
    assert not (info.state.subjects or {})  # nothing was stored for the refused reports
