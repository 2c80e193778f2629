"""The worker service: pulls jobs of its pool, runs them in its engine (vLLM in-process, or an OpenAI-compatible
engine server it fronts), survives spot preemption."""

from ._protocol import EngineRefused, EngineUnavailable, GenerationEngine
from .app import Worker, build
from .engine import Engine
from .settings import WorkerSettings

__all__ = ["Engine", "EngineRefused", "EngineUnavailable", "GenerationEngine", "Worker", "WorkerSettings", "build"]
