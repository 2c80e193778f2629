"""The gateway: OpenAI-compatible HTTP in front of the queue (sync and async), API keys, budget admission.

Start it with ``python -m costwise.gateway``; manage keys with ``python -m costwise.gateway keys …``.
"""

from ._service import Gateway
from .app import GatewayApp, build
from .budget import Admission, AlwaysAllow, BudgetHook
from .errors import ApiError
from .keys import ApiKey, KeyStore
from .settings import GatewaySettings

__all__ = [
    "Admission",
    "AlwaysAllow",
    "ApiError",
    "ApiKey",
    "BudgetHook",
    "Gateway",
    "GatewayApp",
    "GatewaySettings",
    "KeyStore",
    "build",
]
