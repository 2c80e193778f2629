"""Publish inference requests to costwise and get their results back.

>>> async with await Client.connect("nats://127.0.0.1:4222") as client:
...     request_id = await client.publish(tenant="acme", prompt="What is 2+2?")
...     result = await client.result("acme", request_id, timeout=60)
...     async for delta in client.stream(tenant="acme", prompt="Tell me a story"):
...         print(delta.text, end="")
"""

from ._client import Client, NotACacheHit, new_request_id
from ._stream import Delta, DeltaStream, chunks
from ._waiter import ResultWaiter

__all__ = ["Client", "Delta", "DeltaStream", "NotACacheHit", "ResultWaiter", "chunks", "new_request_id"]
