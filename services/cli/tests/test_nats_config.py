"""``costwise nats-config`` on a real nats-server started with the generated accounts: tenants are fenced in,
services can do their jobs."""

from __future__ import annotations

import json

import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from costwise.cli._nats_config import render, service_users, tenant_user
from costwise.client import Client
from costwise.contracts import ErrorCode, subjects
from costwise.contracts.subjects import tenant_inbox
from costwise.messaging import ensure_consumer, send_error_result
from costwise.testing import RecordingConnection


def test_generated_passwords_are_fresh_and_env_wins() -> None:
    env = {"COSTWISE_NATS_PASSWORD_TENANT_X": "given"}
    assert tenant_user("x", env).password == "given"
    assert tenant_user("y", env).password != tenant_user("y", env).password
    with pytest.raises(ValueError):
        tenant_user("a.b", env)  # a dot would make a tenant span two subject tokens


def test_password_refs_keep_every_secret_out_of_the_file() -> None:
    env = {"COSTWISE_NATS_PASSWORD_TENANT_X": "given"}
    users = [*service_users(env), tenant_user("x", env)]
    text = render(users, system_password="sys-secret", refs=True)
    assert "given" not in text and "sys-secret" not in text
    assert "password: $COSTWISE_NATS_PASSWORD_TENANT_X" in text and "password: $COSTWISE_NATS_PASSWORD_SYS}" in text
    assert text.count("password: $") == len(users) + 1  # every user and the system account's


async def _read_own(conn: RecordingConnection, tenant: str, filter_subject: str) -> list[bytes]:
    """Read stored results as a tenant client must: a named push consumer with one filter, to its own inbox."""
    inbox = conn.nc.new_inbox()
    sub = await conn.nc.subscribe(inbox)
    config = ConsumerConfig(
        name=f"{tenant}-{inbox.rsplit('.', 1)[1]}",
        filter_subject=filter_subject,
        deliver_subject=inbox,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.NONE,
        inactive_threshold=5,
    )
    await conn.nc.jetstream().add_consumer(subjects.RESULTS.name, config, timeout=2)
    out = [(await sub.next_msg(5)).data]
    await sub.unsubscribe()
    return out


async def test_tenant_publishes_own_request_and_reads_own_result(conns: dict[str, RecordingConnection]) -> None:
    a, cache = conns["a"], conns["cache"]
    live = await a.nc.subscribe(subjects.tenant_results("a"))
    ack = await a.nc.jetstream().publish(subjects.requests("a"), b"req-a1", headers={"Nats-Msg-Id": "a.r1"})
    assert ack.stream == subjects.REQUESTS.name
    # The cache, as svc-cache, takes the request from its durable and answers it (a "hit").
    cjs = cache.nc.jetstream()
    await ensure_consumer(cjs, subjects.CACHE_REQUESTS)
    sub = await cjs.pull_subscribe_bind(subjects.CACHE_REQUESTS.durable, stream=subjects.REQUESTS.name)
    (msg,) = await sub.fetch(1, timeout=5)
    assert (msg.subject, msg.data) == (subjects.requests("a"), b"req-a1")
    await msg.ack()
    await cjs.publish(subjects.results("a", "r1"), b"result-a1")
    assert (await live.next_msg(5)).data == b"result-a1"
    assert await _read_own(a, "a", subjects.results("a", "r1")) == [b"result-a1"]
    assert await _read_own(a, "a", subjects.tenant_results("a")) == [b"result-a1"]


async def test_tenant_cannot_publish_as_another_tenant(conns: dict[str, RecordingConnection]) -> None:
    a, router = conns["a"], conns["router"]
    await a.nc.publish(subjects.requests("b"), b"forged")
    await a.nc.publish(subjects.route("b"), b"forged bypass")
    await a.nc.publish(subjects.results("a", "self-made"), b"forged result")
    assert await a.violated(subjects.requests("b")) and await a.violated(subjects.route("b"))
    ack = await a.nc.jetstream().publish(subjects.route("a"), b"own bypass", headers={"Nats-Msg-Id": "a.r-bypass"})
    assert ack.stream == subjects.ROUTE.name  # its own requests may skip the cache (subjects.entry)
    assert await a.violated(subjects.results("a", "self-made"))
    info = await router.nc.jetstream().stream_info(subjects.REQUESTS.name, subjects_filter=subjects.requests("b"))
    assert not (info.state.subjects or {}).get(subjects.requests("b"))  # nothing reached the stream


async def test_tenant_cannot_read_another_tenants_results(conns: dict[str, RecordingConnection]) -> None:
    a, b, router = conns["a"], conns["b"], conns["router"]
    await router.nc.jetstream().publish(subjects.results("b", "secret"), b"result-b")
    # Live: a subscription on b's results (or b's inbox) is refused.
    await a.nc.subscribe(subjects.tenant_results("b"))
    await a.nc.subscribe(f"{tenant_inbox('b')}.>")
    await a.nc.subscribe(subjects.requests("b"))
    assert await a.violated(subjects.requests("b"))
    assert await a.violated(subjects.tenant_results("b"))
    assert await a.violated(f"{tenant_inbox('b')}.>")
    # Stored: a consumer filtered on b's results, an unfiltered one (nats-py's ordered consumers), a direct or
    # stream message get, and pulling from (or retargeting) a service's durable all go nowhere.
    create = f"$JS.API.CONSUMER.CREATE.{subjects.RESULTS.name}"
    denied = [
        f"{create}.x.{subjects.tenant_results('b')}",
        create,
        f"$JS.API.STREAM.MSG.GET.{subjects.RESULTS.name}",
        f"$JS.API.DIRECT.GET.{subjects.RESULTS.name}.{subjects.results('b', 'secret')}",
        f"$JS.API.CONSUMER.MSG.NEXT.{subjects.RESULTS.name}.{subjects.CACHE_RESULTS.durable}",
        f"{create}.{subjects.CACHE_RESULTS.durable}.{subjects.tenant_results('a')}",
        f"$JS.API.STREAM.INFO.{subjects.RESULTS.name}",
        # Nor another tenant's requests, nor the cached answers (every tenant's) in the exact cache's bucket.
        f"$JS.API.CONSUMER.CREATE.{subjects.REQUESTS.name}.x.{subjects.requests('b')}",
        f"$JS.API.DIRECT.GET.KV_{subjects.CACHE_EXACT.bucket}.$KV.{subjects.CACHE_EXACT.bucket}.b.>",
    ]
    for subject in denied:
        with pytest.raises(TimeoutError):
            await a.nc.request(subject, b"{}", timeout=0.5)
        assert await a.violated(subject), subject
    # The filter in the subject must be the config's: a's subject cannot carry a consumer of b's results.
    body = {
        "stream_name": subjects.RESULTS.name,
        "config": {"name": "sneaky", "deliver_subject": f"{tenant_inbox('a')}.x"},
    }
    body["config"]["filter_subject"] = subjects.tenant_results("b")
    reply = await a.nc.request(f"{create}.sneaky.{subjects.tenant_results('a')}", json.dumps(body).encode(), 2)
    assert json.loads(reply.data)["error"]["code"] == 400
    assert await _read_own(b, "b", subjects.results("b", "secret")) == [b"result-b"]  # b itself can


async def test_services_do_their_jobs_and_nothing_else(conns: dict[str, RecordingConnection]) -> None:
    router, worker = conns["router"], conns["worker"]
    rjs, wjs = router.nc.jetstream(), worker.nc.jetstream()
    spec = subjects.worker_jobs("acl-pool")
    await ensure_consumer(wjs, spec)
    await rjs.publish(subjects.jobs("acl-pool"), b"job", headers={"Nats-Msg-Id": "a.j1"})
    sub = await wjs.pull_subscribe_bind(spec.durable, stream=subjects.JOBS.name)
    (msg,) = await sub.fetch(1, timeout=5)
    await msg.ack()
    ack = await wjs.publish(subjects.completions("acl-pool"), b"completion", headers={"Nats-Msg-Id": "a.j1"})
    assert ack.stream == subjects.COMPLETIONS.name
    await worker.nc.publish(subjects.requests("a"), b"worker forging a request")
    assert await worker.violated(subjects.requests("a"))
    await router.nc.publish(subjects.usage("a"), b"router forging usage")
    assert await router.violated(subjects.usage("a"))


async def test_the_gateway_publishes_for_any_tenant_and_waits_with_the_client(
    conns: dict[str, RecordingConnection],
) -> None:
    gateway, cache = conns["gateway"], conns["cache"]
    client = Client(gateway.nc)  # the real waiting path: a filtered consumer on the results stream
    await client.publish(tenant="b", prompt="hi", request_id="g1")
    await send_error_result(
        cache.nc.jetstream(), request_id="g1", tenant="b", code=ErrorCode.INVALID_REQUEST, message="x"
    )
    result = await client.result("b", "g1", timeout=5)
    assert (result.tenant, result.status) == ("b", "error")
    assert not gateway.errors
