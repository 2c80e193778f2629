"""Publish inference requests to costwise and get their results back.

>>> async with await Client.connect("nats://127.0.0.1:4222") as client:
...     request_id = await client.publish(tenant="acme", prompt="What is 2+2?")
...     result = await client.result("acme", request_id, timeout=60)
"""

from ._client import Client, new_request_id
from ._waiter import ResultWaiter

__all__ = ["Client", "ResultWaiter", "new_request_id"]
