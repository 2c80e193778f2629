"""The Kubernetes shape as files: the base and its overlays render, validate (core kinds against Kubernetes'
schemas, ScaledObjects against KEDA's published CRD and scaler schemas), run every catalog backend, scale on real
stream and consumer names, and the provisioning job makes every stream and bucket R3 on a real cluster.

No cluster here: these are the checks that need none.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import nats
import pytest
import yaml

from costwise.cli._nats_config import ACCOUNT
from costwise.contracts import subjects
from costwise.messaging import ensure_streams
from costwise.testing import NatsCluster, dev_tool

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
KEDA = K8S / "schemas" / "keda"
VARIANTS = ("base", "overlays/cpu", "overlays/production")
K8S_VERSION = "1.37.0"
Doc = dict[str, Any]


def _catalog() -> dict[str, Any]:
    return tomllib.loads((ROOT / "deploy" / "catalog.example.toml").read_text())


@pytest.fixture(scope="module", params=VARIANTS)
def variant(request: pytest.FixtureRequest) -> str:
    """The base and each overlay: every check below runs on all of them."""
    return str(request.param)


def _render(variant: str) -> list[Doc]:
    argv = [dev_tool("kubectl"), "kustomize", "--load-restrictor=LoadRestrictionsNone", str(K8S / variant)]
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
            assert env["COSTWISE_WORKER_TENSOR_PARALLEL_SIZE"] == "1"
            continue
        # One engine over the catalog's GPUs per worker, and the pod is given exactly those.
        gpus = str(backend.get("gpus", 1))
        resources = pod["containers"][0]["resources"]
        assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == gpus
        assert env["COSTWISE_WORKER_TENSOR_PARALLEL_SIZE"] == gpus
        assert (env["COSTWISE_WORKER_MODEL"], env["COSTWISE_WORKER_QUANTIZATION"]) == (
            backend["model"],
            backend.get("quantization", "none"),
        )
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
