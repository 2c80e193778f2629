"""The router service. This slice is a pass-through: request → job for the model's pool; completion → result.

Learned routing, the cascade and provider arbitrage replace :func:`choose_pool` in the router issue.
"""

from .app import Router, build
from .settings import RouterSettings

__all__ = ["Router", "RouterSettings", "build"]
