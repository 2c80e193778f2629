"""``costwise up``: nats-server from the wheel, streams provisioned, every service as a supervised child process."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from costwise.catalog import Catalog, Provider, WorkerPool, default_catalog, load_catalog
from costwise.messaging import connect, find_nats_server, provision

from ._supervisor import GaveUp, Spec, Supervisor

SERVICES = ("cache", "router", "billing", "gateway", "webhooks")
_CATALOG_READERS = ("ROUTER", "BILLING", "GATEWAY", "PROVIDER")
_TRACED = ("CACHE", "ROUTER", "WORKER", "PROVIDER", "GATEWAY", "WEBHOOKS")
# The tracing UI runs in a tool environment of its own (uv tool run): its ~140 dependencies never meet
# the services' pins (vLLM constrains fastapi/starlette), and a machine that never opens it pays nothing.
PHOENIX = "arize-phoenix==20.26.1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tracing_ui(port: int, data: Path, logs: Path) -> Spec | None:
    """Phoenix on ``port`` (OTLP/HTTP at ``/v1/traces``, UI at ``/``), or ``None`` when uv is not at hand."""
    # `uv run` says where it is in UV; without it (the venv's own `costwise`), PATH, then the one `make` bootstraps.
    bootstrapped = Path(sys.prefix).parent / ".tools" / "bin" / "uv"
    uv = os.environ.get("UV") or shutil.which("uv") or (str(bootstrapped) if bootstrapped.is_file() else None)
    if uv is None:
        print("tracing UI: needs uv (make up bootstraps it into .tools/bin); running without it", flush=True)
        return None
    env = {
        # Phoenix logs every SQL statement of its schema migrations at start (~4,800 lines) unless told not
        # to; its ORM logs stay at warnings. A value already in the environment wins.
        "PHOENIX_LOG_MIGRATIONS": "false",
        "PHOENIX_DB_LOGGING_LEVEL": "warning",
        **os.environ,
    }
    env.update(
        PHOENIX_HOST="127.0.0.1",
        PHOENIX_PORT=str(port),
        PHOENIX_GRPC_PORT=str(_free_port()),
        PHOENIX_WORKING_DIR=str(data / "phoenix"),
    )
    # A convenience: it may fail (no package index) without stopping the stack, so it is not restarted.
    argv = [uv, "tool", "run", "--from", PHOENIX, "phoenix", "serve"]
    return Spec("tracing UI", argv, env, logs / "phoenix.log", restart=False)


def _local(pool: WorkerPool) -> bool:
    """Pools this machine can run itself: built-in models, model directories on disk, and engine servers (the
    worker only fronts one: the server runs wherever its URL points)."""
    return pool.engine_url is not None or pool.model.startswith("builtin:") or Path(pool.model).is_dir()


def _worker_env(pool: WorkerPool, env: dict[str, str]) -> dict[str, str]:
    worker_env = dict(env, COSTWISE_WORKER_POOL=pool.name, COSTWISE_WORKER_SPOT=str(pool.spot).lower())
    if pool.engine_url is None:
        worker_env.setdefault("COSTWISE_WORKER_MODEL", pool.model)
        worker_env.setdefault("COSTWISE_WORKER_TENSOR_PARALLEL_SIZE", str(pool.gpus))
        return worker_env
    worker_env.update(
        COSTWISE_WORKER_ENGINE_URL=pool.engine_url,
        COSTWISE_WORKER_MODEL=pool.model,  # the name the server serves it by
        COSTWISE_WORKER_MAX_IN_FLIGHT=str(pool.max_in_flight),
        COSTWISE_WORKER_CONTINUE_FROM_TEXT=str(pool.continue_from_text).lower(),
    )
    if pool.engine_api_key_env:
        worker_env["COSTWISE_WORKER_ENGINE_API_KEY_ENV"] = pool.engine_api_key_env
    return worker_env


def _catalog(args: argparse.Namespace, data: Path) -> tuple[Catalog, Path]:
    """The catalog every service reads: ``--catalog``, or one local pool running ``--model``."""
    if args.catalog:
        return load_catalog(args.catalog), Path(args.catalog).resolve()
    path = data / "catalog.json"
    path.write_bytes(msgspec.json.encode(default_catalog(model=args.model)))
    return load_catalog(path), path


def _service(module: str, name: str, env: dict[str, str], logs: Path) -> Spec:
    # Each service runs as `python -m costwise.<module>`; the launcher never imports them.
    return Spec(name, [sys.executable, "-m", f"costwise.{module}"], env, logs / f"{name}.log")


def _services(catalog: Catalog, env: dict[str, str], logs: Path) -> list[Spec]:
    specs = [_service(name, name, env, logs) for name in SERVICES]
    for backend in catalog.backends:
        if isinstance(backend, Provider):
            provider_env = dict(env, COSTWISE_PROVIDER_BACKEND=backend.name)
            specs.append(_service("provider", f"provider-{backend.name}", provider_env, logs))
        elif _local(backend):
            specs.append(_service("worker", f"worker-{backend.name}", _worker_env(backend, env), logs))
        else:
            print(f"pool {backend.name} ({backend.model}): start its GPU workers on GPU machines", flush=True)
    return specs


def _env(url: str, data: Path, catalog_path: Path, gateway_port: int) -> dict[str, str]:
    env = dict(os.environ)
    for name in (*SERVICES, "worker", "provider"):
        env[f"COSTWISE_{name.upper()}_NATS_URL"] = url
    for reader in _CATALOG_READERS:
        env[f"COSTWISE_{reader}_CATALOG"] = str(catalog_path)
    env.setdefault("COSTWISE_CACHE_DATA_DIR", str(data / "cache"))
    env.setdefault("COSTWISE_BILLING_DATABASE_URL", f"sqlite:///{data / 'billing' / 'ledger.db'}")
    env.setdefault("COSTWISE_GATEWAY_PORT", str(gateway_port))
    return env


def run_stack(args: argparse.Namespace) -> int:
    """Run the stack until SIGINT/SIGTERM (0), or until a process keeps dying (1); stops everything either way."""
    stopping = _until_signalled()  # before anything starts: an early Ctrl-C still stops what did
    supervisor = Supervisor()
    try:
        _start(args, supervisor)
        supervisor.run(stopping)
        return 0
    except GaveUp as exc:
        print(f"costwise up: giving up, stopping everything: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        # The services first (workers hand their jobs back through NATS), then nats-server, the first started.
        supervisor.stop(supervisor.children[1:])
        supervisor.stop()


def _start(args: argparse.Namespace, supervisor: Supervisor) -> None:
    data = Path(args.data_dir).resolve()
    logs = data / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    catalog, catalog_path = _catalog(args, data)
    url = _start_nats(supervisor, args.port or _free_port(), data, logs)
    _check_free(args.gateway_port, "--gateway-port")
    asyncio.run(_provision(url))
    env = _env(url, data, catalog_path, args.gateway_port)
    tracing = _tracing_ui(args.tracing_port, data, logs) if args.tracing_port else None
    if tracing is not None:
        supervisor.start(tracing)
        for name in _TRACED:
            env.setdefault(f"COSTWISE_{name}_OTLP_ENDPOINT", f"http://127.0.0.1:{args.tracing_port}/v1/traces")
    for spec in _services(catalog, env, logs):
        supervisor.start(spec)
    print(_banner(url, logs, args.gateway_port, data, args.tracing_port if tracing else None), flush=True)


def _start_nats(supervisor: Supervisor, port: int, data: Path, logs: Path) -> str:
    """nats-server on ``port`` with JetStream in ``data/nats``: restarted there, it finds its streams again."""
    _check_free(port, "--port")
    argv = [find_nats_server(), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(data / "nats")]
    nats = supervisor.start(Spec("nats-server", argv, dict(os.environ), logs / "nats-server.log"))
    deadline = time.monotonic() + 10
    while not _accepts(port):
        if not nats.running() or time.monotonic() > deadline:
            raise GaveUp(f"nats-server did not start on port {port} (log: {logs / 'nats-server.log'})")
        time.sleep(0.05)
    return f"nats://127.0.0.1:{port}"


def _check_free(port: int, option: str) -> None:
    if _accepts(port):
        raise GaveUp(f"port {port} is taken (another costwise up?); choose another with {option}")


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _until_signalled() -> Callable[[], bool]:
    """SIGINT and SIGTERM ask for a clean stop; returns "has one come?"."""
    received: list[int] = []

    def note(signum: int, _frame: object) -> None:
        received.append(signum)

    signal.signal(signal.SIGINT, note)
    signal.signal(signal.SIGTERM, note)
    return lambda: bool(received)


def _banner(url: str, logs: Path, gateway_port: int, data: Path, tracing_port: int | None) -> str:
    # ./costwise (the repo root's wrapper: uv run --no-sync costwise) works where `make up` was typed.
    ledger = data / "billing" / "ledger.db"
    traces = f"http://127.0.0.1:{tracing_port}  (Phoenix; starts ~30 s after the rest)" if tracing_port else "off"
    return f"""
costwise is up.
  NATS (JetStream):  {url}
  publish:           ./costwise publish "What is the capital of France?" --tenant demo --wait
  watch results:     ./costwise watch --tenant demo
  OpenAI API:        http://127.0.0.1:{gateway_port}/v1  (key: ./costwise python -m costwise.gateway keys create --tenant demo)
  cost report:       COSTWISE_BILLING_DATABASE_URL=sqlite:///{ledger} ./costwise report
  traces:            {traces}
  service logs:      {logs}/
The worker loads its model first (the first run also prepares it, about a minute).
A process that dies is restarted (each restart is one line below). Ctrl-C stops everything.
"""


async def _provision(url: str) -> None:
    nc = await connect(url, name="costwise-up")
    try:
        await provision(nc.jetstream())
    finally:
        await nc.close()
