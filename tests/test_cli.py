"""`costwise up` starts the embedded stack; `costwise publish --wait` gets an answer through it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from costwise.testing import free_port

COSTWISE = [sys.executable, "-m", "costwise.cli"]


@pytest.mark.timeout(600)
def test_up_then_publish_from_the_shell(tmp_path: Path, tiny_model: str) -> None:
    port, gateway_port, tracing_port = free_port(), free_port(), free_port()
    env = dict(os.environ, COSTWISE_WORKER_MAX_MODEL_LEN="1024")
    up = subprocess.Popen(
        [
            *COSTWISE,
            "up",
            "--data-dir",
            str(tmp_path),
            "--port",
            str(port),
            "--model",
            tiny_model,
            "--gateway-port",
            str(gateway_port),
            "--tracing-port",
            str(tracing_port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        url = f"nats://127.0.0.1:{port}"
        _await_log(tmp_path / "logs" / "worker-default.log", b"serving pool", up, timeout=300)
        # The tracing UI starts beside the stack and can come up after it (installing, then compiling ~14k files):
        # spans exported before it listens are dropped (its banner line says it starts ~30 s after the rest).
        _spans(tracing_port, wait_s=300)
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
        _through_the_gateway(url, gateway_port)
        _traced_in_the_ui(tracing_port, request_id)
        ledger = f"sqlite:///{tmp_path / 'billing' / 'ledger.db'}"
        report = _until_ok(
            [*COSTWISE, "report", "--tenant", "shell", "--json"], dict(os.environ, COSTWISE_BILLING_DATABASE_URL=ledger)
        )
        assert json.loads(report)["requests"] >= 2  # the shell's request and the gateway's, both billed
    finally:
        up.send_signal(signal.SIGINT)
        banner = up.communicate(timeout=120)[0].decode()
    assert up.returncode == 0 and url in banner


def _through_the_gateway(nats_url: str, port: int) -> None:
    """The OpenAI-compatible gateway `up` started answers with a key made by its CLI."""
    import openai

    env = dict(os.environ, COSTWISE_GATEWAY_NATS_URL=nats_url)
    made = subprocess.run(
        [sys.executable, "-m", "costwise.gateway", "keys", "create", "--tenant", "shell"],
        env=env,
        capture_output=True,
        timeout=60,
        check=True,
    )
    key = next(w for w in made.stdout.decode().split() if w.startswith("cw-") or w.startswith("sk-"))
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, timeout=120)
    chat = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert chat.choices[0].message.content is not None and chat.usage is not None


def _traced_in_the_ui(port: int, request_id: str, timeout: float = 180) -> None:
    """The tracing UI `up` started shows the request as one trace across the services."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        spans = _spans(port)
        mine = [s for s in spans if s["attributes"].get("costwise.request_id") == request_id]
        if mine:
            trace = {s["name"] for s in spans if s["context"]["trace_id"] == mine[0]["context"]["trace_id"]}
            if "worker.job" in trace:
                assert mine[0]["attributes"]["gen_ai.usage.output_tokens"] <= 5
                return
        time.sleep(2)
    raise AssertionError(f"request {request_id} never showed up as one trace in the tracing UI")


def _spans(port: int, wait_s: float = 0) -> list[dict[str, Any]]:
    """The spans the tracing UI holds; with ``wait_s``, waits that long for it to answer (raises if it never does)."""
    import urllib.request

    deadline = time.monotonic() + wait_s
    while True:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/v1/projects/default/spans?limit=1000", timeout=5
            ) as r:
                return list(json.loads(r.read())["data"])
        except OSError:  # not up yet (it installs and starts beside the stack)
            if time.monotonic() > deadline:
                if wait_s:
                    raise AssertionError(f"the tracing UI on port {port} never answered") from None
                return []
        time.sleep(1)


def _until_ok(cmd: list[str], env: dict[str, str], timeout: float = 60) -> str:
    # Billing writes the ledger a moment after the results arrive.
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run(cmd, env=env, capture_output=True, timeout=60)
        if out.returncode == 0 and b'"requests": 0' not in out.stdout and b'"requests":0' not in out.stdout:
            return out.stdout.decode()
        if time.monotonic() > deadline:
            raise AssertionError(f"{cmd} never succeeded: {out.stdout[-500:]!r} {out.stderr[-1500:]!r}")
        time.sleep(1)


def _await_log(path: Path, needle: bytes, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"costwise up exited early: {proc.communicate()[0].decode()[-2000:]}")
        if path.exists() and needle in path.read_bytes():
            return
        time.sleep(0.5)
    raise AssertionError(f"{needle!r} not in {path} after {timeout}s")


@pytest.mark.parametrize(
    "argv",
    [
        ["publish", "hello", "--tenant", "demo"],
        ["budget", "set", "--tenant", "demo", "--usd", "10", "--period", "month"],
        ["python", "-m", "costwise.gateway", "keys", "create", "--tenant", "demo"],
        ["python", "-m", "costwise.webhooks", "secret", "create", "--tenant", "demo"],
        ["python", "-m", "costwise.webhooks", "replay", "--tenant", "demo"],
    ],
)
def test_a_command_with_no_stack_to_talk_to_says_so_instead_of_hanging(argv: list[str]) -> None:
    url = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    command = [sys.executable, *argv[1:]] if argv[0] == "python" else [*COSTWISE, *argv]
    env = {k: v for k, v in os.environ.items() if not k.startswith("COSTWISE_")} | {"COSTWISE_NATS_URL": url}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert f"no NATS server answers at {url}" in done.stderr and "Traceback" not in done.stderr, done.stderr
