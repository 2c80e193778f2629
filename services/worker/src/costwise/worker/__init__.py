"""The worker service: pulls jobs of its pool, runs them in vLLM, survives spot preemption."""

from .app import Worker, build
from .engine import Engine
from .settings import WorkerSettings

__all__ = ["Engine", "Worker", "WorkerSettings", "build"]
