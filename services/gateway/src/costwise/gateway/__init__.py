"""The gateway: OpenAI-compatible HTTP in front of the queue (sync and async), API keys, budget admission
(``costwise.budget``: an over-budget request is refused with 402 before it is queued).

Start it with ``python -m costwise.gateway``; manage keys with ``python -m costwise.gateway keys …``.
"""

from ._service import Gateway
from .app import GatewayApp, build
from .errors import ApiError
from .keys import ApiKey, KeyStore
from .settings import GatewaySettings

__all__ = [
    "ApiError",
    "ApiKey",
    "Gateway",
    "GatewayApp",
    "GatewaySettings",
    "KeyStore",
    "build",
]
