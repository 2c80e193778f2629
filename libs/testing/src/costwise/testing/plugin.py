"""The pytest plugin: real nats-server fixtures and an in-memory span exporter."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.js import JetStreamContext
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costwise.messaging import NatsServer, connect, ensure_streams
from costwise.telemetry import setup

from ._cluster import NatsCluster
from ._names import unique_token


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """One real JetStream server for the whole session, on a free port and a temp store."""
    server = NatsServer(tmp_path_factory.mktemp("nats")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def nats_url(nats_server: NatsServer) -> str:
    return nats_server.url


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def nc(nats_url: str) -> AsyncIterator[Client]:
    """A session-wide connection with every costwise stream provisioned."""
    client = await connect(nats_url, name="pytest")
    await ensure_streams(client.jetstream())
    yield client
    await client.drain()


@pytest.fixture
def js(nc: Client) -> JetStreamContext:
    return nc.jetstream()


@pytest.fixture
def unique() -> str:
    """A fresh subject token (tenant, pool, stream suffix) so tests never see each other's messages."""
    return unique_token()


@pytest.fixture(scope="session")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    """A 3-node JetStream cluster on loopback (started on first use)."""
    cluster = NatsCluster(Path(tmp_path_factory.mktemp("cluster"))).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def span_exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer_provider(span_exporter: InMemorySpanExporter) -> TracerProvider:
    """A tracer provider exporting to ``span_exporter``; pass it to the code under test."""
    return setup("pytest", exporter=span_exporter)
