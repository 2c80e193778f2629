"""Pytest fixtures on real parts: a nats-server per session, a 3-node cluster, unique names, span capture.

Enable with ``pytest_plugins = ["costwise.testing.plugin"]`` in a root conftest.py.
"""

from ._cluster import NatsCluster, free_port
from ._fake_openai import FakeOpenAI
from ._names import unique_token
from ._spans import span_names
from ._streams import first_stored

__all__ = ["FakeOpenAI", "NatsCluster", "first_stored", "free_port", "span_names", "unique_token"]
