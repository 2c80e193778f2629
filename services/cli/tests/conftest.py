"""A nats-server whose only users are the ones ``costwise nats-config --tenants a,b`` generates (one per test
module), and a connection per user that records the server's refusals."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from costwise.cli._nats_config import main
from costwise.contracts.subjects import tenant_inbox
from costwise.messaging import ensure_streams
from costwise.testing import RecordingConnection, SecuredNats, start_configured_nats

# Taken from the environment (as a deployment would); every other user gets a generated one.
PASSWORDS = {
    f"COSTWISE_NATS_PASSWORD_{user}": f"pw-{user.lower()}"
    for user in ("TENANT_A", "TENANT_B", "SVC_ROUTER", "SVC_CACHE", "SVC_WORKER", "SVC_GATEWAY")
}


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, monkeypatch_module: pytest.MonkeyPatch) -> Iterator[SecuredNats]:
    """A JetStream server whose only users are the generated ones (tenants a and b)."""
    tmp = tmp_path_factory.mktemp("nats-acl")
    for key, value in PASSWORDS.items():
        monkeypatch_module.setenv(key, value)
    assert main(["--tenants", "a,b", "--out", str(tmp / "accounts.conf")]) == 0
    assert (tmp / "accounts.conf").stat().st_mode & 0o777 == 0o600
    conf = tmp / "nats.conf"
    conf.write_text(f'jetstream {{ store_dir: "{tmp / "js"}" }}\ninclude "accounts.conf"\n')
    server = start_configured_nats(conf, tmp)
    yield server
    server.proc.terminate()
    server.proc.wait(10)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def conns(secured: SecuredNats) -> AsyncIterator[dict[str, RecordingConnection]]:
    """One connection per user: router, cache, worker, gateway (services) and tenants a and b."""
    at = secured.hostport
    router = await RecordingConnection().open(at, "svc-router", "pw-svc_router")
    await ensure_streams(router.nc.jetstream())  # a service user provisions every stream and bucket
    cache = await RecordingConnection().open(at, "svc-cache", "pw-svc_cache")
    worker = await RecordingConnection().open(at, "svc-worker", "pw-svc_worker")
    gateway = await RecordingConnection().open(at, "svc-gateway", "pw-svc_gateway")
    a = await RecordingConnection().open(at, "tenant-a", "pw-tenant_a", inbox=tenant_inbox("a"))
    b = await RecordingConnection().open(at, "tenant-b", "pw-tenant_b", inbox=tenant_inbox("b"))
    all_ = {"router": router, "cache": cache, "worker": worker, "gateway": gateway, "a": a, "b": b}
    yield all_
    for c in all_.values():
        await c.nc.close()
