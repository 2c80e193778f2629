"""The stack a replay drives: ``costwise up`` as a child process (or someone else's, with ``--nats``), the
recording server its loopback backends point at, and how to tell that every service and pool is pulling."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psutil
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from costwise.catalog import Catalog
from costwise.contracts import subjects

__all__ = [
    "ReplayError",
    "Stack",
    "accepts",
    "durables",
    "ledger_url",
    "loopback_port",
    "loopback_urls",
    "recordings",
    "unready",
    "wait_ready",
]

_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
SERVICE_CONSUMERS = (
    subjects.CACHE_REQUESTS,
    subjects.ROUTER_ROUTE,
    subjects.ROUTER_COMPLETIONS,
    subjects.BILLING_USAGE,
    subjects.BILLING_RESULTS,
)


class ReplayError(Exception):
    """The replay cannot run as asked (a catalog it cannot serve, a stack that does not start): one line."""


def loopback_urls(catalog: Catalog) -> list[str]:
    """Every backend URL of the catalog on this machine: provider base URLs and pools' engine servers."""
    urls = [getattr(b, "base_url", None) or getattr(b, "engine_url", None) for b in catalog.backends]
    return [u for u in urls if u and urlsplit(u).hostname in _LOOPBACK]


def loopback_port(catalog: Catalog) -> int | None:
    """The one port the replay's recording server answers on; ``None`` when no backend is on loopback."""
    ports = sorted({urlsplit(u).port or 80 for u in loopback_urls(catalog)})
    if len(ports) > 1:
        raise ReplayError(
            f"the catalog's loopback backends use ports {ports}: the replay runs one recording server, so every "
            "loopback engine_url/base_url must name the same port"
        )
    return ports[0] if ports else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextlib.asynccontextmanager
async def recordings(
    workload: Path, catalog: Catalog, port: int | None, *, tokens_per_s: float | None = None
) -> AsyncIterator[str | None]:
    """The recording server on ``port`` answering from ``workload``'s recorded responses, for as long as the
    replay runs (paced at ``tokens_per_s`` per answer, so jobs are in flight long enough to be preempted);
    ``None`` when no backend is on loopback or something already answers there (a recording
    server of the user's own, ``costwise-bench recording-server``)."""
    if port is None or accepts(port):
        yield None
        return
    from costwise.bench.recording import Recordings, RecordingServer  # uvicorn and starlette: only when one is needed

    server = RecordingServer(Recordings.from_workload(workload), catalog, tokens_per_s=tokens_per_s)
    async with server.serving(host="127.0.0.1", port=port) as base_url:
        yield base_url


def ledger_url(given: str | None, data_dir: Path) -> str:
    """The billing ledger: ``--ledger``, else the environment's (the stack inherits it), else the data dir's."""
    return given or os.environ.get("COSTWISE_BILLING_DATABASE_URL") or f"sqlite:///{data_dir / 'billing' / 'ledger.db'}"


@dataclass
class Stack:
    """``costwise up`` running one catalog in one data dir, stopped as Ctrl-C would stop it."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str]

    @classmethod
    def start(cls, catalog: Path, data_dir: Path, ledger: str, *, env: dict[str, str] | None = None) -> Stack:
        """``costwise up`` on ``catalog`` with its billing writing ``ledger``; ``env`` adds settings (e.g.
        ``COSTWISE_ROUTER_RESPONSE_VERIFIER``) on top of this process's environment."""
        data_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        argv = [sys.executable, "-m", "costwise.cli", "up", "--catalog", str(catalog.resolve())]
        argv += ["--data-dir", str(data_dir), "--port", str(port), "--gateway-port", str(free_port())]
        env = {**os.environ, **(env or {}), "COSTWISE_BILLING_DATABASE_URL": ledger}
        log = data_dir / "costwise-up.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [*argv, "--tracing-port", "0"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # the replay stops it itself, services first (a terminal's Ctrl-C would not)
                preexec_fn=_terminate_with_parent,
            )
        return cls(f"nats://127.0.0.1:{port}", proc, log, env)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    async def wait_listening(self, timeout: float = 30.0) -> None:
        """Until nats-server accepts connections (the supervisor starts it first)."""
        deadline = time.monotonic() + timeout
        while not accepts(self.port):
            self.check_running()
            if time.monotonic() > deadline:
                raise ReplayError(f"nats-server did not listen on {self.url} within {timeout:.0f} s ({self.log})")
            await asyncio.sleep(0.1)

    def check_running(self) -> None:
        if self.proc.poll() is not None:
            raise ReplayError(f"costwise up exited with {self.proc.returncode}: {_tail(self.log)}")

    def workers(self) -> list[psutil.Process]:
        """The pool workers the supervisor runs now (``python -m costwise.worker``)."""
        with contextlib.suppress(psutil.Error):
            children = psutil.Process(self.proc.pid).children(recursive=True)
            return [p for p in children if _is_worker(p)]
        return []

    def stop(self, timeout: float = 90.0) -> None:
        """SIGINT, as Ctrl-C: the supervisor stops the services (workers hand their jobs back), then nats-server."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def _is_worker(proc: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        return "costwise.worker" in proc.cmdline()
    return False


def _terminate_with_parent() -> None:
    """In the child, before exec: SIGTERM when the replay dies, even by SIGKILL, so no stack outlives it."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _tail(log: Path, chars: int = 1500) -> str:
    with contextlib.suppress(OSError):
        return log.read_text(errors="replace")[-chars:]
    return f"(no log at {log})"


def durables(catalog: Catalog) -> list[str]:
    """The consumers that pull when the stack serves: every service's and every backend's workers'."""
    return [spec.durable for spec in SERVICE_CONSUMERS] + [
        subjects.worker_jobs(b.name).durable for b in catalog.backends
    ]


async def unready(js: JetStreamContext, names: Iterable[str]) -> list[str]:
    """Those of ``names`` with no pull request waiting right now (a service or worker not pulling yet)."""
    idle = []
    for name in names:
        try:
            info = await js.consumer_info(_stream_of(name), name)
        except NotFoundError:
            idle.append(name)
            continue
        if not info.num_waiting:
            idle.append(name)
    return idle


def _stream_of(durable: str) -> str:
    for spec in SERVICE_CONSUMERS:
        if spec.durable == durable:
            return spec.stream
    return subjects.JOBS.name


async def wait_ready(js: JetStreamContext, catalog: Catalog, stack: Stack, timeout: float) -> float:
    """Until every consumer of :func:`durables` was seen pulling (each at least once: an idle pull expires and is
    renewed every half second); returns the seconds it took. The first run also prepares models."""
    started, waiting = time.monotonic(), set(durables(catalog))
    while waiting:
        stack.check_running()
        if time.monotonic() - started > timeout:
            raise ReplayError(f"not serving after {timeout:.0f} s; never seen pulling: {sorted(waiting)} ({stack.log})")
        with contextlib.suppress(Exception):  # nats-server may still be starting
            waiting &= set(await unready(js, waiting))
        await asyncio.sleep(0.25)
    return time.monotonic() - started
