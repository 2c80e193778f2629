"""Give the engine's compute a core of its own, as a GPU's compute is its own.

On a CPU-only machine vLLM's model threads share the cores with everything else a benchmark runs. A path with more
processes (gateway, cache, router, nats-server, a client) then slows the engine's steps by the CPU it takes from
them, which says something about this machine and nothing about a deployment whose engine computes on a GPU.
:func:`engine_core` puts vLLM's processes (the engine core that schedules the steps, the worker that computes
them) on one core and everything else of this process tree (and, by inheritance, what it starts later) on the
others.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["ENGINE_CORE", "bind_engine_env", "engine_core"]

ENGINE_CORE = 0
BIND_ENV = "VLLM_CPU_OMP_THREADS_BIND"


def bind_engine_env() -> None:
    """Before the engine loads: vLLM's CPU backend binds its model threads to :data:`ENGINE_CORE`."""
    os.environ[BIND_ENV] = str(ENGINE_CORE)


def engine_core() -> set[int]:
    """After the engine loaded (with :func:`bind_engine_env`): vLLM's processes on :data:`ENGINE_CORE`, every other
    thread of this process tree on the other cores. Returns those cores."""
    rest = os.sched_getaffinity(0) - {ENGINE_CORE}
    if not rest:
        raise RuntimeError("a core of its own for the engine needs at least two cores")
    for pid in _tree(os.getpid()):
        cores = {ENGINE_CORE} if _is_vllm(pid) else rest
        for tid in _threads(pid):
            with contextlib.suppress(ProcessLookupError, FileNotFoundError):  # a thread that just ended
                os.sched_setaffinity(tid, cores)
    return rest


def _is_vllm(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().startswith("VLLM::")  # vLLM names its processes so
    except FileNotFoundError:
        return False


def _threads(pid: int) -> list[int]:
    try:
        return [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except FileNotFoundError:
        return []


def _tree(pid: int) -> Iterator[int]:
    yield pid
    for tid in _threads(pid):
        try:
            children = Path(f"/proc/{pid}/task/{tid}/children").read_text().split()
        except FileNotFoundError:
            continue
        for child in children:
            yield from _tree(int(child))
