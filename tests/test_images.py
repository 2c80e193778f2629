"""Every service image's environment, built as its Dockerfile stage builds it, starts its service.

No Docker engine here, so this is the image minus the container: the build context (what .dockerignore lets
through), each stage's own `uv sync` into an environment of its own, then the service from that environment
against a real nats-server. The dev environment holds every package at once, so a service importing something it
does not declare works there and fails only in its image: this is where that shows. The worker images (vLLM)
are checked in test_deploy.py (the CUDA one's environment, `make worker-cuda-env`) and by every worker test.
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
import shlex
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from costwise.contracts import subjects
from costwise.messaging import NatsServer
from costwise.testing import dockerfile_stages, free_port, uv_env

ROOT = Path(__file__).resolve().parents[1]
CATALOG = ROOT / "deploy" / "catalog.example.toml"
PROVIDER = "groq-8b"  # a provider backend of the example catalog


def _context(to: Path) -> Path:
    """The Docker build context as the build stage copies it (uv.lock is ignored too: the image resolves anew)."""
    ignored = [p for p in (ROOT / ".dockerignore").read_text().splitlines() if p and not p.startswith("#")]

    def skip(folder: str, names: list[str]) -> set[str]:
        rel = Path(folder).relative_to(ROOT)
        return {n for n in names if any(fnmatch.fnmatch(str(rel / n), pat) for pat in ignored)}

    to.mkdir()
    shutil.copy(ROOT / "pyproject.toml", to)
    for part in ("contracts", "libs", "services", "bench"):
        shutil.copytree(ROOT / part, to / part, ignore=skip)
    return to


@pytest.fixture(scope="module")
def environments(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    root = tmp_path_factory.mktemp("images")
    context = _context(root / "context")
    envs = {}
    stages = dockerfile_stages(ROOT / "Dockerfile")
    # The images without vLLM: one `uv sync --package` stage each.
    for stage, body in stages.items():
        if not stage.startswith("venv-") or "worker" in stage:
            continue
        service = stage.removeprefix("venv-")
        (sync,) = [line for line in body.splitlines() if "uv sync" in line]
        argv = shlex.split(sync[sync.index("uv sync") :])
        envs[service] = root / service
        env = uv_env(UV_PROJECT_ENVIRONMENT=str(envs[service]))
        env.pop("VIRTUAL_ENV", None)
        out = subprocess.run(
            [env["UV"], *argv[1:], "--quiet"], cwd=context, env=env, capture_output=True, text=True, timeout=600
        )
        assert out.returncode == 0, f"{service}: {out.stderr}"
    yield envs


def _service_env(service: str, nats_url: str, tmp: Path, gateway_port: int) -> dict[str, str]:
    prefix = f"COSTWISE_{service.upper()}_"
    env = {"PATH": os.environ["PATH"], "HOME": os.environ["HOME"], prefix + "NATS_URL": nats_url}
    if service in {"router", "billing", "provider", "gateway"}:
        env[prefix + "CATALOG"] = str(CATALOG)
    env |= {
        "provider": {prefix + "BACKEND": PROVIDER, "GROQ_API_KEY": "not-used"},
        "gateway": {prefix + "PORT": str(gateway_port)},
        "billing": {prefix + "DATABASE_URL": f"sqlite:///{tmp}/ledger.db"},
    }.get(service, {})
    return env


async def _consumers(nats_url: str) -> set[str]:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream(timeout=10)
        return {c.name for s in await js.streams_info() for c in await js.consumers_info(s.config.name)}
    finally:
        await nc.close()


def _answers(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)
    except urllib.error.HTTPError:
        return True  # 401 without a key: up
    except OSError:
        return False
    return True


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[str]:
    """A server of this test's own: the services bind the shared durables (router-route, billing-usage, ...)."""
    server = NatsServer(tmp_path / "nats").start()
    yield server.url
    server.stop()


async def test_each_service_starts_from_its_own_image_environment(
    environments: dict[str, Path], own_nats: str, tmp_path: Path
) -> None:
    assert set(environments) == {"cache", "router", "billing", "gateway", "webhooks", "provider"}
    nats_server, gateway_port = own_nats, free_port()
    procs = {
        service: await asyncio.create_subprocess_exec(
            venv / "bin" / "python",
            "-m",
            f"costwise.{service}",
            env=_service_env(service, nats_server, tmp_path, gateway_port),
            cwd=tmp_path,
            stdout=(tmp_path / f"{service}.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        for service, venv in environments.items()
    }
    wanted = {
        spec.durable
        for spec in (subjects.CACHE_REQUESTS, subjects.ROUTER_ROUTE, subjects.BILLING_USAGE, subjects.WEBHOOKS_RESULTS)
    } | {subjects.worker_jobs(PROVIDER).durable}
    try:
        for _ in range(240):
            exited = {s: p.returncode for s, p in procs.items() if p.returncode is not None}
            assert not exited, f"{exited}: {[(tmp_path / f'{s}.log').read_text()[-2000:] for s in exited]}"
            if wanted <= await _consumers(nats_server) and await asyncio.to_thread(_answers, gateway_port):
                break
            await asyncio.sleep(0.5)
        else:
            pytest.fail(f"not every service came up in 120 s: {wanted - await _consumers(nats_server)}")
    finally:
        for proc in procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        codes = {service: await asyncio.wait_for(proc.wait(), 60) for service, proc in procs.items()}
    assert codes == dict.fromkeys(procs, 0), codes
    logs = {s: (tmp_path / f"{s}.log").read_text() for s in procs}
    assert not [s for s, text in logs.items() if "Traceback" in text], logs
