"""``costwise up``: nats-server from the wheel, streams provisioned, every service as a child process."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from costwise.messaging import NatsServer, provision

# Each service runs as `python -m costwise.<name>`; the launcher never imports them.
SERVICES = ("cache", "router", "worker")


def _spawn(name: str, env: dict[str, str], logs: Path) -> subprocess.Popen[bytes]:
    log = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
    # Own process group, so a child that will not stop can be killed with everything it started
    # (the worker's vLLM engine core is a grandchild).
    return subprocess.Popen(
        [sys.executable, "-m", f"costwise.{name}"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def run_stack(args: argparse.Namespace) -> int:
    data = Path(args.data_dir).resolve()
    logs = data / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    server = NatsServer(data / "nats", port=args.port).start()
    asyncio.run(provision(server.url, name="costwise-up"))
    env = dict(os.environ)
    for name in SERVICES:
        env[f"COSTWISE_{name.upper()}_NATS_URL"] = server.url
    env.setdefault("COSTWISE_WORKER_MODEL", args.model)
    env.setdefault("COSTWISE_CACHE_DATA_DIR", str(data / "cache"))
    children = {name: _spawn(name, env, logs) for name in SERVICES}
    print(_banner(server.url, logs), flush=True)
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stop:
            for name, proc in children.items():
                if proc.poll() is not None:
                    print(f"{name} exited with {proc.returncode}; see {logs / name}.log", flush=True)
                    stop = True
            time.sleep(0.5)
    finally:
        for proc in children.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in children.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        server.stop()
    return 0


def _banner(url: str, logs: Path) -> str:
    return f"""
costwise is up.
  NATS (JetStream):  {url}
  publish:           uv run costwise publish "What is the capital of France?" --tenant demo --wait
  watch results:     uv run costwise watch --tenant demo
  service logs:      {logs}/
The worker loads its model first (the first run also prepares it, about a minute). Ctrl-C stops everything.
"""
