"""R3 streams on a real 3-node cluster: provisioning waits for the meta leader; losing a node loses nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

from nats.js import JetStreamContext

from costwise.contracts import ChatMessage, InferenceRequest, subjects
from costwise.contracts.subjects import ConsumerSpec
from costwise.messaging import (
    Consumer,
    NatsServer,
    ack_current,
    connect,
    ensure_consumer,
    ensure_streams,
    publish,
)
from costwise.testing import NatsCluster, free_port


async def test_r3_streams_survive_the_loss_of_the_stream_leader(nats_cluster: NatsCluster, unique: str) -> None:
    nc = await connect(",".join(nats_cluster.urls), name="cluster-test")
    js = nc.jetstream()
    await ensure_streams(js, replicas=3)
    await ensure_streams(js)  # what each service does at start, at its default of one replica
    subject = subjects.requests(unique)

    def req(i: int) -> InferenceRequest:
        return InferenceRequest(request_id=f"r{i}", tenant=unique, messages=[ChatMessage(role="user", content="q")])

    await publish(js, subject, req(0), msg_id=f"{unique}-0")
    info = await js.stream_info(subjects.REQUESTS.name)
    assert info.config.num_replicas == 3 and info.cluster is not None
    leader = next(s for s in nats_cluster.servers if s.name == info.cluster.leader)
    leader.stop(kill=True)
    try:
        for _ in range(60):  # a new leader is elected within seconds
            try:
                await publish(js, subject, req(1), msg_id=f"{unique}-1", timeout=1)
                break
            except Exception:
                await asyncio.sleep(0.5)
        else:
            raise AssertionError("publishing never resumed after the leader died")
        state = await js.stream_info(subjects.REQUESTS.name, subjects_filter=subject)
        assert state.state.subjects == {subject: 2}
    finally:
        await nc.close()
        leader.start()


async def test_a_pull_consumer_keeps_pulling_when_its_consumer_leader_dies(
    nats_cluster: NatsCluster, unique: str
) -> None:
    nc = await connect(",".join(nats_cluster.urls), name="cluster-consumer-test")
    js = nc.jetstream()
    await ensure_streams(js, replicas=3)
    spec = ConsumerSpec(
        durable=f"test-{unique}", stream=subjects.ROUTE.name, filter_subject=subjects.route(unique), ack_wait_s=5
    )
    await ensure_consumer(js, spec)
    handled: asyncio.Queue[str] = asyncio.Queue()

    async def on_request(req: InferenceRequest) -> None:
        await ack_current()
        handled.put_nowait(req.request_id)

    def req(rid: str) -> InferenceRequest:
        return InferenceRequest(request_id=rid, tenant=unique, messages=[ChatMessage(role="user", content="q")])

    consumer = Consumer(spec, on_request, service="test")
    await consumer.start(js)
    info = await js.consumer_info(spec.stream, spec.durable)
    assert info.cluster is not None and info.cluster.leader
    leader = next(s for s in nats_cluster.servers if s.name == info.cluster.leader)
    try:
        # The node the previous test restarted may still be catching up: publish once the stream answers.
        await _publish_until_stored(js, subjects.route(unique), req("before"), msg_id=f"{unique}-before")
        assert await asyncio.wait_for(handled.get(), 10) == "before"
        leader.stop(kill=True)
        # publishing fails while the stream elects a leader, if it led the stream too
        await _publish_until_stored(js, subjects.route(unique), req("after"), msg_id=f"{unique}-after")
        async with asyncio.timeout(30):
            # At least once: an ack the dead leader had not replicated yet brings "before" back first.
            while await handled.get() != "after":
                pass
    finally:
        await consumer.stop()
        await nc.close()
        leader.start()


async def _publish_until_stored(js: JetStreamContext, subject: str, message: InferenceRequest, *, msg_id: str) -> None:
    async with asyncio.timeout(30):
        while True:
            try:
                await publish(js, subject, message, msg_id=msg_id, timeout=1)
                return
            except Exception:
                await asyncio.sleep(0.5)


async def test_credentials_in_the_seed_url_reach_the_servers_the_cluster_announces(tmp_path: Path) -> None:
    auth = ["--user", "svc-test", "--pass", "not-a-secret"]
    route_ports = [free_port(), free_port()]
    routes = [f"nats://127.0.0.1:{p}" for p in route_ports]
    nodes = [
        NatsServer(tmp_path / f"a{i}", name=f"a{i}", cluster=("auth-test", port), routes=routes, args=auth)
        for i, port in enumerate(route_ports)
    ]
    for node in nodes:
        node.start()
    seed, other = nodes
    nc = await connect(f"nats://svc-test:not-a-secret@127.0.0.1:{seed.port}", name="auth-test")
    try:
        async with asyncio.timeout(10):
            while not nc.discovered_servers:  # the seed's INFO names the other node, without credentials
                await asyncio.sleep(0.1)
        seed.stop(kill=True)
        async with asyncio.timeout(20):  # the only server left is the announced one
            while not (nc.is_connected and nc.connected_url and nc.connected_url.port == other.port):
                await asyncio.sleep(0.1)
        sub = await nc.subscribe("ping")
        await nc.publish("ping", b"x")
        assert (await sub.next_msg(5)).data == b"x"
    finally:
        await nc.close()
        for node in nodes:
            node.stop()
