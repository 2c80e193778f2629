"""``costwise up``: nats-server from the wheel, streams provisioned, every service as a child process."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import msgspec

from costwise.catalog import Catalog, Provider, WorkerPool, default_catalog, load_catalog
from costwise.messaging import NatsServer, provision

# Each service runs as `python -m costwise.<name>`; the launcher never imports them.
SERVICES = ("cache", "router", "billing", "gateway", "webhooks")
_CATALOG_READERS = ("ROUTER", "BILLING", "GATEWAY", "PROVIDER")
_TRACED = ("CACHE", "ROUTER", "WORKER", "PROVIDER", "GATEWAY", "WEBHOOKS")
# The tracing UI runs in a tool environment of its own (uv tool run): its ~140 dependencies never meet
# the services' pins (vLLM constrains fastapi/starlette), and a machine that never opens it pays nothing.
PHOENIX = "arize-phoenix==20.26.1"


def _spawn(module: str, log_name: str, env: dict[str, str], logs: Path) -> subprocess.Popen[bytes]:
    log = open(logs / f"{log_name}.log", "ab")  # noqa: SIM115 - owned by the child
    # Own process group, so a child that will not stop can be killed with everything it started
    # (the worker's vLLM engine core is a grandchild).
    return subprocess.Popen(
        [sys.executable, "-m", f"costwise.{module}"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tracing_ui(port: int, data: Path, logs: Path) -> subprocess.Popen[bytes] | None:
    """Phoenix on ``port`` (OTLP/HTTP at ``/v1/traces``, UI at ``/``), or ``None`` when uv is not at hand."""
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        print("tracing UI: needs uv on PATH (make up bootstraps it); running without it", flush=True)
        return None
    env = dict(
        os.environ,
        PHOENIX_HOST="127.0.0.1",
        PHOENIX_PORT=str(port),
        PHOENIX_GRPC_PORT=str(_free_port()),
        PHOENIX_WORKING_DIR=str(data / "phoenix"),
    )
    log = open(logs / "phoenix.log", "ab")  # noqa: SIM115 - owned by the child
    cmd = [uv, "tool", "run", "--from", PHOENIX, "phoenix", "serve"]
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _local(pool: WorkerPool) -> bool:
    """Pools this machine can run itself: built-in models and model directories on disk."""
    return pool.model.startswith("builtin:") or Path(pool.model).is_dir()


def _catalog(args: argparse.Namespace, data: Path) -> tuple[Catalog, Path]:
    """The catalog every service reads: ``--catalog``, or one local pool running ``--model``."""
    if args.catalog:
        return load_catalog(args.catalog), Path(args.catalog).resolve()
    path = data / "catalog.json"
    path.write_bytes(msgspec.json.encode(default_catalog(model=args.model)))
    return load_catalog(path), path


def _children(catalog: Catalog, env: dict[str, str], logs: Path) -> dict[str, subprocess.Popen[bytes]]:
    children = {name: _spawn(name, name, env, logs) for name in SERVICES}
    for backend in catalog.backends:
        if isinstance(backend, Provider):
            provider_env = dict(env, COSTWISE_PROVIDER_BACKEND=backend.name)
            children[f"provider-{backend.name}"] = _spawn("provider", f"provider-{backend.name}", provider_env, logs)
        elif _local(backend):
            worker_env = dict(env, COSTWISE_WORKER_POOL=backend.name, COSTWISE_WORKER_SPOT=str(backend.spot).lower())
            worker_env.setdefault("COSTWISE_WORKER_MODEL", backend.model)
            children[f"worker-{backend.name}"] = _spawn("worker", f"worker-{backend.name}", worker_env, logs)
        else:
            print(f"pool {backend.name} ({backend.model}): start its GPU workers on GPU machines", flush=True)
    return children


def run_stack(args: argparse.Namespace) -> int:
    data = Path(args.data_dir).resolve()
    logs = data / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    catalog, catalog_path = _catalog(args, data)
    server = NatsServer(data / "nats", port=args.port).start()
    asyncio.run(provision(server.url, name="costwise-up"))
    env = dict(os.environ)
    for name in (*SERVICES, "worker", "provider"):
        env[f"COSTWISE_{name.upper()}_NATS_URL"] = server.url
    for reader in _CATALOG_READERS:
        env[f"COSTWISE_{reader}_CATALOG"] = str(catalog_path)
    env.setdefault("COSTWISE_CACHE_DATA_DIR", str(data / "cache"))
    env.setdefault("COSTWISE_BILLING_DATABASE_URL", f"sqlite:///{data / 'billing' / 'ledger.db'}")
    env.setdefault("COSTWISE_GATEWAY_PORT", str(args.gateway_port))
    tracing = _tracing_ui(args.tracing_port, data, logs) if args.tracing_port else None
    if tracing is not None:
        for name in _TRACED:
            env.setdefault(f"COSTWISE_{name}_OTLP_ENDPOINT", f"http://127.0.0.1:{args.tracing_port}/v1/traces")
    children = _children(catalog, env, logs)
    print(_banner(server.url, logs, args.gateway_port, data, args.tracing_port if tracing else None), flush=True)
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
        # The tracing UI is a convenience: it may fail (no package index) without stopping the stack.
        everything = [*children.values(), *([tracing] if tracing is not None else [])]
        for proc in everything:
            if proc.poll() is None:
                proc.terminate()
        for proc in everything:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        server.stop()
    return 0


def _banner(url: str, logs: Path, gateway_port: int, data: Path, tracing_port: int | None) -> str:
    ledger = data / "billing" / "ledger.db"
    traces = f"http://127.0.0.1:{tracing_port}  (Phoenix; starts ~30 s after the rest)" if tracing_port else "off"
    return f"""
costwise is up.
  NATS (JetStream):  {url}
  publish:           uv run costwise publish "What is the capital of France?" --tenant demo --wait
  watch results:     uv run costwise watch --tenant demo
  OpenAI API:        http://127.0.0.1:{gateway_port}/v1  (key: uv run python -m costwise.gateway keys create --tenant demo)
  cost report:       COSTWISE_BILLING_DATABASE_URL=sqlite:///{ledger} uv run costwise report
  traces:            {traces}
  service logs:      {logs}/
The worker loads its model first (the first run also prepares it, about a minute). Ctrl-C stops everything.
"""
