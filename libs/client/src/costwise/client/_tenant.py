"""Connecting as a tenant, on the tenant's own NATS user (``costwise nats-config --tenants``)."""

from __future__ import annotations

from costwise.contracts import subjects
from costwise.messaging import connect

from ._client import Client

__all__ = ["connect_tenant"]


async def connect_tenant(url: str, tenant: str, *, user: str, password: str) -> Client:
    """A :class:`Client` on ``tenant``'s own NATS user (``tenant-<tenant>``), which it closes when closed.

    The connection uses the tenant's inbox prefix (``subjects.tenant_inbox``), the only inbox that user may read:
    with NATS's default one every reply and result delivery would be refused. Such a client may publish only
    ``tenant``'s requests and wait only for its results (:meth:`Client.result`, :meth:`Client.results`,
    :meth:`Client.wait_all`, :meth:`Client.stream`); asking for another tenant's result times out, and the server
    logs a permissions violation. Like a service, it keeps reconnecting through a broker restart.
    """
    nc = await connect(
        url,
        name=f"costwise-client-{tenant}",
        user=user,
        password=password,
        inbox_prefix=subjects.tenant_inbox(tenant),
    )
    return Client(nc, owns_connection=True)
