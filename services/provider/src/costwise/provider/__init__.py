"""Provider worker: answers one catalog ``provider`` backend's jobs by calling its OpenAI-compatible API."""

from .app import ProviderWorker, build
from .settings import ProviderSettings

__all__ = ["ProviderSettings", "ProviderWorker", "build"]
