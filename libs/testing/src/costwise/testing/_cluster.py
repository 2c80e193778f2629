from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

from nats.js import JetStreamContext
from nats.js.api import ClusterInfo

from costwise.messaging import NatsServer

__all__ = ["NatsCluster", "free_port"]


def free_port() -> int:
    """A TCP port nothing listens on right now (127.0.0.1), for a server a test starts."""
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports: held open together while they are picked, so none is picked twice."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


class NatsCluster:
    """Three ``nats-server`` processes clustered on loopback, each with its own JetStream store."""

    def __init__(self, root: Path, size: int = 3, name: str = "costwise-test") -> None:
        # Client and route ports of every node at once: a node left to pick its own client port could take a route
        # port not yet bound (CI saw n1's client port be its own route port: "address already in use").
        ports = free_ports(2 * size)
        client_ports, cluster_ports = ports[:size], ports[size:]
        routes = [f"nats://127.0.0.1:{p}" for p in cluster_ports]
        self.servers = [
            NatsServer(root / f"n{i}", name=f"n{i}", port=port, cluster=(name, cport), routes=routes)
            for i, (port, cport) in enumerate(zip(client_ports, cluster_ports, strict=True))
        ]

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    async def leader_of(self, js: JetStreamContext, stream: str) -> NatsServer:
        """The server that leads ``stream`` now (the one to kill to force an election)."""
        info = await js.stream_info(stream)
        leader = info.cluster.leader if info.cluster else None
        return next(s for s in self.servers if s.name == leader)

    async def caught_up(self, js: JetStreamContext, timeout: float = 120.0) -> None:
        """Wait until every replica of every replicated stream and consumer is online and current (a rolling
        restart's check: only then may the next node go down without costing a stream or a consumer its quorum)."""
        async with asyncio.timeout(timeout):
            while True:  # other processes' state, read by polling
                if await _all_current(js):
                    return
                await asyncio.sleep(0.25)

    def start(self) -> NatsCluster:
        for server in self.servers:
            server.store_dir.mkdir(parents=True, exist_ok=True)
            server.start()
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


async def _all_current(js: JetStreamContext) -> bool:
    with contextlib.suppress(Exception):  # the API fails while a node restarts: not current yet
        for stream in await js.streams_info():
            if (stream.config.num_replicas or 1) > 1 and not _current(stream.cluster):
                return False
            consumers = await js.consumers_info(stream.config.name or "")
            if not all(_current(c.cluster) for c in consumers if (c.config.num_replicas or 0) != 1):
                return False
        return True
    return False


def _current(cluster: ClusterInfo | None) -> bool:
    """A raft group with a leader whose followers are all online and caught up (a lone replica has none)."""
    if cluster is None or not cluster.leader:
        return False
    return all(p.current and not p.offline for p in cluster.replicas or [])
