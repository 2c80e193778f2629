"""Pytest fixtures on real parts: a nats-server per session, a 3-node cluster, a server
from a given config, unique names, span capture.

Enable with ``pytest_plugins = ["costwise.testing.plugin"]`` in a root conftest.py.
"""

from ._cluster import NatsCluster, free_port
from ._dockerfile import dockerfile_instructions, dockerfile_stages
from ._fake_openai import FakeOpenAI
from ._names import unique_token
from ._secured import RecordingConnection, SecuredNats, start_configured_nats
from ._spans import span_names
from ._streams import first_stored
from ._tools import dev_tool, uv_env

__all__ = [
    "FakeOpenAI",
    "NatsCluster",
    "RecordingConnection",
    "SecuredNats",
    "dev_tool",
    "dockerfile_instructions",
    "dockerfile_stages",
    "first_stored",
    "free_port",
    "span_names",
    "start_configured_nats",
    "unique_token",
    "uv_env",
]
