"""`costwise up` is a supervisor: a SIGKILLed service or nats-server comes back, and requests still get answered.

One stack (tiny model) is shared by the tests below, which run in order: router, then nats-server, then Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from costwise.testing import free_port

COSTWISE = [sys.executable, "-m", "costwise.cli"]
TENANT = "supervised"


@dataclass
class Stack:
    """A running `costwise up`: its process, its NATS URL and port, and its output so far (read by a thread)."""

    proc: subprocess.Popen[bytes]
    data: Path
    port: int
    lines: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip())

    def await_line(self, *needles: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if all(n in line for n in needles):
                    return line
            time.sleep(0.05)
        raise AssertionError(f"no line with {needles} in:\n" + "\n".join(self.lines[-40:]))

    def child(self, marker: str) -> psutil.Process:
        """The launcher's child whose command line contains ``marker`` (waits for it to be there)."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for proc in psutil.Process(self.proc.pid).children():
                try:
                    if marker in " ".join(proc.cmdline()) and proc.status() != psutil.STATUS_ZOMBIE:
                        return proc
                except psutil.NoSuchProcess:
                    continue
            time.sleep(0.05)
        raise AssertionError(f"no child process running {marker}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, tiny_model: str) -> Iterator[Stack]:
    data, port = tmp_path_factory.mktemp("up"), free_port()
    argv = [*COSTWISE, "up", "--data-dir", str(data), "--port", str(port), "--model", tiny_model]
    argv += ["--gateway-port", str(free_port()), "--tracing-port", "0"]
    env = dict(os.environ, COSTWISE_WORKER_MAX_MODEL_LEN="1024")
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    up = Stack(proc, data, port)
    threading.Thread(target=up.read, daemon=True).start()
    try:
        _await_log(data / "logs" / "worker-default.log", b"serving pool", proc, timeout=300)
        yield up
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=120)


def publish(up: Stack, request_id: str, timeout: float = 120) -> dict[str, object]:
    """Publish one request and wait for its result, retrying while NATS is unreachable."""
    started = time.monotonic()
    argv = [*COSTWISE, "--nats", up.url, "publish", "hello", "--tenant", TENANT, "--max-tokens", "4"]
    argv += ["--request-id", request_id, "--wait", "--timeout", "60"]
    while True:
        out = subprocess.run(argv, capture_output=True, timeout=90)
        if out.returncode == 0:
            result: dict[str, object] = json.loads(out.stdout.decode().strip().splitlines()[-1])
            assert result["request_id"] == request_id
            return result
        if time.monotonic() - started > timeout:
            raise AssertionError(f"publish failed: {out.stdout[-500:]!r} {out.stderr[-1500:]!r}")
        time.sleep(0.2)


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.timeout(600)
def test_a_killed_service_is_restarted_and_a_request_sent_meanwhile_is_answered(stack: Stack) -> None:
    router = stack.child("-m costwise.router")
    killed = time.monotonic()
    router.kill()
    line = stack.await_line("router (pid", "was killed by SIGKILL", timeout=10)
    noticed = time.monotonic() - killed
    assert "restarting it in 1 s (attempt 1;" in line and "router.log" in line
    result = publish(stack, "after-router-kill")  # queued while no router runs; the new one routes it
    answered = time.monotonic() - killed
    assert result["status"] == "ok"
    assert stack.child("-m costwise.router").pid != router.pid
    print(f"\n{line}\nrouter: restart logged after {noticed:.2f} s, request answered {answered:.2f} s after the kill")


@pytest.mark.timeout(600)
def test_a_killed_nats_server_comes_back_on_its_port_with_its_streams(stack: Stack) -> None:
    nats = stack.child("nats-server")
    killed = time.monotonic()
    nats.kill()
    line = stack.await_line("nats-server (pid", "was killed by SIGKILL", timeout=10)
    noticed = time.monotonic() - killed
    assert "restarting it in 1 s" in line
    while not _accepts(stack.port):
        assert time.monotonic() - killed < 30, "nats-server did not come back on its port"
        time.sleep(0.02)
    back = time.monotonic() - killed
    result = publish(stack, "after-nats-kill")  # retries until JetStream answers again
    answered = time.monotonic() - killed
    assert result["status"] == "ok"
    # The same port and data dir: what was stored before the crash is still there.
    earlier = subprocess.run(
        [*COSTWISE, "--nats", stack.url, "result", "after-router-kill", "--tenant", TENANT, "--timeout", "30"],
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert json.loads(earlier.stdout)["status"] == "ok"
    assert stack.child("nats-server").pid != nats.pid
    print(
        f"\n{line}\nnats-server: restart logged after {noticed:.2f} s, accepting again after {back:.2f} s, "
        f"request answered {answered:.2f} s after the kill"
    )


@pytest.mark.timeout(300)
def test_ctrl_c_still_stops_everything_cleanly(stack: Stack) -> None:
    children = psutil.Process(stack.proc.pid).children(recursive=True)
    before = len(stack.lines)
    stack.proc.send_signal(signal.SIGINT)
    assert stack.proc.wait(timeout=120) == 0
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"left running: {[p.cmdline() for p in alive]}"
    assert not any("restarting" in line for line in stack.lines[before:])  # stopped, not restarted


def _await_log(path: Path, needle: bytes, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"costwise up exited early with {proc.returncode}")
        if path.exists() and needle in path.read_bytes():
            return
        time.sleep(0.5)
    raise AssertionError(f"{needle!r} not in {path} after {timeout}s")
