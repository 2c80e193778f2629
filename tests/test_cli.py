"""`costwise up` starts the embedded stack; `costwise publish --wait` gets an answer through it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

COSTWISE = [sys.executable, "-m", "costwise.cli"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.timeout(600)
def test_up_then_publish_from_the_shell(tmp_path: Path, tiny_model: str) -> None:
    port = _free_port()
    env = dict(os.environ, COSTWISE_WORKER_MAX_MODEL_LEN="1024")
    up = subprocess.Popen(
        [*COSTWISE, "up", "--data-dir", str(tmp_path), "--port", str(port), "--model", tiny_model],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        url = f"nats://127.0.0.1:{port}"
        _await_log(tmp_path / "logs" / "worker.log", b"serving pool", up, timeout=300)
        out = subprocess.run(
            [*COSTWISE, "--nats", url, "publish", "hello", "--tenant", "shell", "--max-tokens", "5", "--wait"],
            capture_output=True,
            timeout=120,
            check=True,
        )
        request_id, result_line = out.stdout.decode().strip().splitlines()
        result = json.loads(result_line)
        assert result["request_id"] == request_id and result["status"] == "ok"
        assert result["usage"]["completion_tokens"] <= 5 and result["source"] == "engine"
        bad = subprocess.run(
            [*COSTWISE, "--nats", url, "publish", "x", "--tenant", "a.b"], capture_output=True, timeout=60
        )
        assert bad.returncode == 1 and b"tenant" in bad.stderr  # a clear error, not a traceback
    finally:
        up.send_signal(signal.SIGINT)
        banner = up.communicate(timeout=120)[0].decode()
    assert up.returncode == 0 and url in banner


def _await_log(path: Path, needle: bytes, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"costwise up exited early: {proc.communicate()[0].decode()[-2000:]}")
        if path.exists() and needle in path.read_bytes():
            return
        time.sleep(0.5)
    raise AssertionError(f"{needle!r} not in {path} after {timeout}s")
