"""R3 streams on a real 3-node cluster: provisioning waits for the meta leader; losing a node loses nothing."""

from __future__ import annotations

import asyncio

from costwise.contracts import ChatMessage, InferenceRequest, subjects
from costwise.messaging import connect, ensure_streams, publish
from costwise.testing import NatsCluster


async def test_r3_streams_survive_the_loss_of_the_stream_leader(nats_cluster: NatsCluster, unique: str) -> None:
    nc = await connect(",".join(nats_cluster.urls), name="cluster-test")
    js = nc.jetstream()
    await ensure_streams(js, replicas=3)
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
