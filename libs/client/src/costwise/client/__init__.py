"""Publish inference requests to costwise and get their results back.

>>> async with await Client.connect("nats://127.0.0.1:4222") as client:
...     request_id = await client.publish(tenant="acme", prompt="What is 2+2?")
...     result = await client.result("acme", request_id, timeout=60)
...     async for delta in client.stream(tenant="acme", prompt="Tell me a story"):
...         print(delta.text, end="")

On a tenant's own NATS user (``costwise nats-config --tenants acme``), connect with :func:`connect_tenant`
(it sets the tenant's inbox prefix, ``subjects.tenant_inbox("acme")``, which that user's permissions require):

>>> async with await connect_tenant(url, "acme", user="tenant-acme", password=secret) as client: ...
"""

from ._client import Client, NotACacheHit, new_request_id
from ._stream import Delta, DeltaStream, chunks
from ._tenant import connect_tenant
from ._waiter import ResultWaiter

__all__ = [
    "Client",
    "Delta",
    "DeltaStream",
    "NotACacheHit",
    "ResultWaiter",
    "chunks",
    "connect_tenant",
    "new_request_id",
]
