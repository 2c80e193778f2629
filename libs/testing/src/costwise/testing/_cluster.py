from __future__ import annotations

import socket
from pathlib import Path

from nats.js import JetStreamContext

from costwise.messaging import NatsServer

__all__ = ["NatsCluster"]


def free_port() -> int:
    """A TCP port nothing listens on right now (127.0.0.1), for a server a test starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NatsCluster:
    """Three ``nats-server`` processes clustered on loopback, each with its own JetStream store."""

    def __init__(self, root: Path, size: int = 3, name: str = "costwise-test") -> None:
        cluster_ports = [free_port() for _ in range(size)]
        routes = [f"nats://127.0.0.1:{p}" for p in cluster_ports]
        self.servers = [
            NatsServer(root / f"n{i}", name=f"n{i}", cluster=(name, cport), routes=routes)
            for i, cport in enumerate(cluster_ports)
        ]

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    async def leader_of(self, js: JetStreamContext, stream: str) -> NatsServer:
        """The server that leads ``stream`` now (the one to kill to force an election)."""
        info = await js.stream_info(stream)
        leader = info.cluster.leader if info.cluster else None
        return next(s for s in self.servers if s.name == leader)

    def start(self) -> NatsCluster:
        for server in self.servers:
            server.store_dir.mkdir(parents=True, exist_ok=True)
            server.start()
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
