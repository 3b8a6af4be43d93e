"""Offline checks of the Kubernetes deliverables (k8s/, Dockerfile): no cluster, no network.

* every YAML file under k8s/ parses; built-in kinds validate with kubernetes-validate (strict: unknown
  fields are errors) against Kubernetes 1.32;
* DaskCluster CRs validate against the CRD shipped by the installed dask-kubernetes (made strict), and
  their scheduler/worker pod specs validate as core v1 Pods;
* ``kubectl kustomize`` renders base and both overlays, and every rendered object validates as above;
  content checks (GPU vs CPU workers, requests/limits, non-root, no Secrets, no literal credentials);
* the Prefect work-pool base job template renders (Prefect's own templating and job configuration
  class) into a Job that validates;
* one image, pinned by digest, everywhere; service-account tokens only where the API is called
  (who may reach whom over the network: test_network_policies.py);
* negative cases prove the validators reject what they should.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import itertools
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.support.helpers import REPO
from tests.support.k8s import (
    AREA_SPEC_KEY,
    DASK_GROUP,
    FLOW_SPEC_KEY,
    JOB_TEMPLATE,
    K8S,
    K8S_VERSION,
    KUSTOMIZATIONS,
    NAMESPACE,
    TRAINING,
    area_deployment,
    cr_errors,
    dask_pod_specs,
    flow_spec,
    job_defaults,
    job_manifest,
    job_template,
    load_docs,
    one,
    rendered,
    validate_daskcluster,
    validate_object,
    validate_pod_spec,
)

IMAGE_NAME, IMAGE_TAG = "ghcr.io/srcube/srcube", "0.1.0"
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# the image every container runs: base/kustomization.yaml pins it (name:tag@digest)
(_PIN,) = [i for i in yaml.safe_load((REPO / "k8s" / "base" / "kustomization.yaml").read_text())["images"]
           if i["name"] == IMAGE_NAME]
IMAGE = f"{IMAGE_NAME}:{_PIN['newTag']}@{_PIN.get('digest', '<no digest>')}"
CLUSTER = "srcube-dask"
CREDENTIAL_NAME = re.compile(r"KEY|SECRET|PASSWORD|TOKEN", re.IGNORECASE)
# names of a Secret / of a key inside it (PREFECT_INTEGRATIONS_KUBERNETES_WORKER_API_KEY_SECRET_NAME=prefect-api)
SECRET_POINTER = re.compile(r"_SECRET_(NAME|KEY)$")
GPU = "nvidia.com/gpu"


# --- files and renders ------------------------------------------------------------------------


def yaml_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*") if p.suffix in (".yaml", ".yml"))


def is_json_patch(doc: Any) -> bool:
    return isinstance(doc, list) and all(isinstance(op, dict) and {"op", "path"} <= set(op) for op in doc)


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every pod spec a rendered kustomization will run, the flow-run DaskCluster's included (the training Job's
    kustomization has none)."""
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield where, doc["spec"]["template"]["spec"]
        elif doc["kind"] == "DaskCluster":
            for role, spec in dask_pod_specs(doc).items():
                yield f"{where}/{role}", spec
    if not any(d["kind"] == "ConfigMap" and d["metadata"]["name"] == "srcube-daskcluster-spec" for d in docs):
        return
    for key in (FLOW_SPEC_KEY, AREA_SPEC_KEY):
        for role, spec in dask_pod_specs(flow_spec(docs, key)).items():
            yield f"ConfigMap/srcube-daskcluster-spec/{key}/{role}", spec


def worker_container(cr: dict[str, Any]) -> dict[str, Any]:
    (container,) = cr["spec"]["worker"]["spec"]["containers"]
    return container


def has_flag(args: list[str], flag: str, value: str) -> bool:
    return any(a == flag and b == value for a, b in itertools.pairwise(args)) or f"{flag}={value}" in args


@functools.cache
def sync_script() -> Any:
    """k8s/sync-flow-specs.py as a module (it derives the flow-run spec from the long-lived CR)."""
    spec = importlib.util.spec_from_file_location("sync_flow_specs", K8S / "sync-flow-specs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- every file under k8s/ --------------------------------------------------------------------


def test_k8s_tree_has_the_deliverables():
    for rel in [
        "README.md",
        "base/kustomization.yaml",
        "overlays/cpu-only/kustomization.yaml",
        "overlays/gpu/kustomization.yaml",
        "prefect/srcube-k8s-base-job-template.json",
        "prefect/create-pools.sh",
    ]:
        assert (K8S / rel).is_file(), rel
    assert len(yaml_files()) >= 10


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_yaml_file_parses_and_validates(path: Path):
    docs = load_docs(path.read_text())
    assert docs, f"{path} is empty"
    for doc in docs:
        if is_json_patch(doc):  # overlay patches: checked through the renders
            continue
        assert isinstance(doc, dict), f"{path}: unexpected top-level {type(doc).__name__}"
        assert "apiVersion" in doc and "kind" in doc, f"{path}: no apiVersion/kind"
        if doc["kind"] == "Kustomization":
            assert doc["apiVersion"].startswith("kustomize.config.k8s.io/")
            continue
        assert doc["kind"] != "Secret", f"{path}: Secrets are created by the operator, never committed"
        validate_object(doc)


def test_no_credentials_in_k8s_tree():
    shapes = {
        "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
        "Prefect Cloud API key": re.compile(r"\bpnu_[A-Za-z0-9]{20,}"),
        "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    }
    for path in [*sorted(p for p in K8S.rglob("*") if p.is_file()), REPO / "Dockerfile"]:
        text = path.read_text()
        for what, shape in shapes.items():
            assert not shape.search(text), f"{path}: looks like a {what}"


# --- DaskCluster against the operator CRD -----------------------------------------------------


def source_daskclusters() -> list[Path]:
    return [p for p in yaml_files() if any(isinstance(d, dict) and d.get("kind") == "DaskCluster"
                                           for d in load_docs(p.read_text()))]


def test_daskcluster_sources_exist():
    names = {p.relative_to(K8S).as_posix() for p in source_daskclusters()}
    assert {"base/dask/daskcluster.yaml", "base/dask/daskcluster-flow.yaml", "base/dask/daskcluster-area.yaml",
            "overlays/cpu-only/daskcluster-flow.yaml", "overlays/gpu/daskcluster-flow.yaml",
            "overlays/cpu-only/daskcluster-area.yaml", "overlays/gpu/daskcluster-area.yaml"} <= names


@pytest.mark.parametrize("path", source_daskclusters(), ids=lambda p: str(p.relative_to(K8S)))
def test_daskcluster_source_validates_against_crd(path: Path):
    (cr,) = load_docs(path.read_text())
    validate_daskcluster(cr)
    sched = cr["spec"]["scheduler"]
    assert sched["service"]["type"] == "ClusterIP"
    assert sched["service"]["selector"] == {"dask.org/cluster-name": cr["metadata"]["name"],
                                            "dask.org/component": "scheduler"}
    assert {(p["name"], p["port"]) for p in sched["service"]["ports"]} == {("tcp-comm", 8786), ("http-dashboard", 8787)}
    (container,) = sched["spec"]["containers"]
    assert container["args"][:2] == ["dask", "scheduler"]
    assert {(p["name"], p["containerPort"]) for p in container["ports"]} == {("tcp-comm", 8786),
                                                                           ("http-dashboard", 8787)}
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"port": "http-dashboard", "path": "/health"}
    args = worker_container(cr)["args"]
    assert args[:2] == ["dask", "worker"]
    assert has_flag(args, "--name", "$(DASK_WORKER_NAME)") and "--dashboard" in args
    assert has_flag(args, "--dashboard-address", "8788")


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_rendered_daskclusters_validate(name: str):
    docs = rendered(name)
    crs = [d for d in docs if d["kind"] == "DaskCluster"]
    assert [cr["metadata"]["name"] for cr in crs] == [CLUSTER]
    validate_daskcluster(crs[0])
    validate_daskcluster(flow_spec(docs))
    validate_daskcluster(flow_spec(docs, AREA_SPEC_KEY))


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_flow_spec_configmap_matches_the_long_lived_cluster(name: str):
    """Kustomize copies daskcluster-flow.yaml verbatim: it must still agree with the rendered CR."""
    docs = rendered(name)
    cr = one(docs, "DaskCluster", CLUSTER)
    got = flow_spec(docs)
    want = sync_script().flow_spec_from(cr)
    assert got == want, (
        f"the flow-run DaskCluster spec of {name} is stale: run `python k8s/sync-flow-specs.py`\n"
        + "\n".join(f"{k}: {got.get(k)!r} != {want.get(k)!r}" for k in want if got.get(k) != want.get(k))
    )
    assert got["metadata"]["name"] != CLUSTER, "the ephemeral cluster must not take over the long-lived one"
    assert got["spec"]["scheduler"]["service"]["selector"]["dask.org/cluster-name"] == got["metadata"]["name"]
    assert got["spec"]["idleTimeout"] > 0
    area = flow_spec(docs, AREA_SPEC_KEY)
    assert area == sync_script().area_spec_from(cr), f"the area spec of {name} is stale: run sync-flow-specs.py"
    assert area["metadata"]["name"] not in (CLUSTER, got["metadata"]["name"])
    assert area["spec"]["scheduler"]["service"]["selector"]["dask.org/cluster-name"] == area["metadata"]["name"]


def test_gpu_worker_group():
    for name in ("base", "gpu"):
        cr = one(rendered(name), "DaskCluster", CLUSTER)
        worker = cr["spec"]["worker"]
        container = worker_container(cr)
        assert container["resources"]["limits"][GPU] == "1"  # a string: the CRD types quantities so
        assert container["resources"]["requests"][GPU] == "1"
        args = container["args"]
        assert has_flag(args, "--resources", "GPU=1"), args
        assert has_flag(args, "--nthreads", "4"), args  # one SR task on the GPU (GPU=1), I/O beside it
        assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in worker["spec"]["tolerations"]
        assert worker["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        env_from = container["envFrom"]
        assert {"configMapRef": {"name": "srcube-config"}} in env_from
        assert {"secretRef": {"name": "srcube-object-store"}} in env_from
        # Prefect tasks run in the workers: they need the API key of an authenticated server / Prefect Cloud,
        # and the asset credentials (reads happen there)
        assert {"secretRef": {"name": "prefect-api", "optional": True}} in env_from
        assert {"secretRef": {"name": "srcube-catalog-credentials", "optional": True}} in env_from
    assert one(rendered("gpu"), "DaskCluster", CLUSTER)["spec"]["worker"]["replicas"] == 2


def test_cpu_only_worker_group():
    cr = one(rendered("cpu-only"), "DaskCluster", CLUSTER)
    worker = cr["spec"]["worker"]
    container = worker_container(cr)
    assert worker["replicas"] == 2
    for kind in ("requests", "limits"):
        assert GPU not in container["resources"][kind]
    assert not any(a.startswith("--resources") for a in container["args"]), container["args"]
    assert "GPU=1" not in container["args"]
    assert "tolerations" not in worker["spec"] and "nodeSelector" not in worker["spec"]
    base = worker_container(one(rendered("base"), "DaskCluster", CLUSTER))

    for kind in ("requests", "limits"):
        assert float(container["resources"][kind]["cpu"]) > float(base["resources"][kind]["cpu"]), kind


# --- the area flow: its own per-run cluster, autoscaled -----------------------------------------

UNKNOWN_TASK_DURATION = "DASK_DISTRIBUTED__SCHEDULER__UNKNOWN_TASK_DURATION"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_area_cluster_runs_one_cell_per_worker(name: str):
    """The area flow's per-run cluster (daskcluster-area.yaml): srcube-dask's pods, but one thread per worker (a
    cell computes on all its pod's cores and its GPU, one cell at a time), one worker to start with (the
    autoscaler adds the others), and a scheduler that takes a cell it has not seen finish as minutes of work
    (test_area_scheduler_asks_for_a_worker_per_cell_in_flight)."""
    from dask.utils import parse_timedelta

    docs = rendered(name)
    cr, area = one(docs, "DaskCluster", CLUSTER), flow_spec(docs, AREA_SPEC_KEY)
    worker = worker_container(area)
    assert has_flag(worker["args"], "--nthreads", "1") and area["spec"]["worker"]["replicas"] == 1
    # the rest of the worker is the long-lived cluster's: image, resources, GPU or not, env, node placement
    long_lived = worker_container(cr)
    strip = [a for a in long_lived["args"] if a != dict(itertools.pairwise(long_lived["args"]))["--nthreads"]]
    assert [a for a in worker["args"] if a != "1"] == strip
    assert {k: v for k, v in worker.items() if k != "args"} == {k: v for k, v in long_lived.items() if k != "args"}
    assert {k: v for k, v in area["spec"]["worker"]["spec"].items() if k != "containers"} == {
        k: v for k, v in cr["spec"]["worker"]["spec"].items() if k != "containers"}
    assert has_flag(worker["args"], "--resources", "GPU=1") is (name != "cpu-only")
    (scheduler,) = area["spec"]["scheduler"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in scheduler["env"]}
    assert parse_timedelta(env[UNKNOWN_TASK_DURATION]) >= 60


def _cell(go: Any, i: int) -> int:
    go.wait()
    return i


def _dotted(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_dotted(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("gpu", [False, True], ids=["cpu-workers", "gpu-workers"])
def test_area_scheduler_asks_for_a_worker_per_cell_in_flight(gpu: bool):
    """What the operator's DaskAutoscaler scales the area cluster by: the scheduler's ``adaptive_target()``, asked
    of a real scheduler configured from the environment the area spec gives its container (as dask reads it), with
    one one-thread worker (with the GPU resource and cells that ask for it, as on GPU workers) and six cells in
    flight: one worker per cell. With dask's default (a task never seen finish counts 0.5 s) it is one worker,
    until the first cell has finished, minutes later."""
    import contextlib

    import dask
    from dask.config import collect_env
    from distributed import Client, Event, LocalCluster

    (scheduler,) = flow_spec(rendered("base"), AREA_SPEC_KEY)["spec"]["scheduler"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in scheduler["env"]}
    targets = {}
    for label, config in (("area", _dotted(collect_env(env))), ("dask default", {})):
        with dask.config.set(config), \
                LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp", host="127.0.0.1",
                             dashboard_address=None, resources={"GPU": 1} if gpu else None) as cluster, \
                Client(cluster) as client:
            go = Event(f"go-{label}")
            with dask.annotate(resources={"GPU": 1}) if gpu else contextlib.nullcontext():
                futures = [client.submit(_cell, go, i, pure=False) for i in range(6)]
            deadline = time.monotonic() + 30
            while client.run_on_scheduler(lambda dask_scheduler: sum(
                    ts.state in ("processing", "queued") for ts in dask_scheduler.tasks.values())) < 6:
                assert time.monotonic() < deadline, "the cells did not reach the scheduler"
                time.sleep(0.05)
            targets[label] = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.adaptive_target())
            go.set()
            assert client.gather(futures) == list(range(6))
    assert targets == {"area": 6, "dask default": 1}


def kube_cluster_autoscaler(cluster: str, namespace: str, **adapt: Any) -> dict[str, Any]:
    """The DaskAutoscaler dask-kubernetes' ``KubeCluster.adapt(**adapt)`` sends to the API server for ``cluster``:
    its own code, with the API object it talks through replaced by a recorder (there is no cluster here)."""
    import asyncio
    import types

    import kr8s
    from dask_kubernetes.operator.kubecluster import kubecluster

    sent: list[dict[str, Any]] = []

    class Recorder:
        def __init__(self, resource: dict[str, Any], namespace: str | None = None):
            self.resource, self.namespace = resource, namespace

        def __await__(self) -> Any:
            async def ready() -> Recorder:
                return self

            return ready().__await__()

        async def patch(self, patch: dict[str, Any]) -> None:
            raise kr8s.NotFoundError(f"no DaskAutoscaler {cluster} yet")

        async def create(self) -> None:
            sent.append({**self.resource, "metadata": {**self.resource["metadata"], "namespace": self.namespace}})

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kubecluster, "DaskAutoscaler", Recorder)
        asyncio.run(kubecluster.KubeCluster._adapt(types.SimpleNamespace(name=cluster, namespace=namespace), **adapt))
    (doc,) = sent
    return doc


def test_area_deployment_runs_on_its_own_autoscaled_cluster():
    """prefect.yaml's area deployment on Kubernetes: a valid orchestrating Job whose environment makes the flow
    create its cluster from daskcluster-area.yaml (a file of the ConfigMap the pod mounts) and autoscale it from 1 to
    as many workers as it has cells in flight: the DaskAutoscaler KubeCluster sends passes the operator's CRD, and
    the flow-run pod's Role may create it."""
    from srcube.flows.settings import DaskSettings, cluster_spec_for_run

    dep = area_deployment()
    max_cells = dep["parameters"]["max_cells"]
    assert max_cells > 1 and dep["parameters"]["out"].startswith("s3://")
    manifest = job_manifest(**dep["work_pool"]["job_variables"])
    validate_job(manifest)
    pod = manifest["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["resources"]["limits"].get(GPU, 0) == 0 and not pod["nodeSelector"] and not pod["tolerations"]
    assert pod["automountServiceAccountToken"] is True  # KubeCluster creates the cluster through the API
    env = {e["name"]: e.get("value") for e in c["env"]}
    spec_path = env["SRCUBE_DASK_K8S_SPEC"]
    (mount,) = [m for m in c["volumeMounts"] if spec_path.startswith(m["mountPath"] + "/")]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    docs = rendered("base")
    assert Path(spec_path).name == AREA_SPEC_KEY
    assert set(one(docs, "ConfigMap", volume["configMap"]["name"])["data"]) == {FLOW_SPEC_KEY, AREA_SPEC_KEY}
    settings = DaskSettings.from_env({**one(docs, "ConfigMap", "srcube-config")["data"], **env})
    assert settings.mode == "kubernetes" and settings.k8s_spec == spec_path
    assert settings.k8s_max_workers == max_cells  # one cell per worker: as many workers as cells in flight
    runner = settings.task_runner()
    assert runner.adapt_kwargs == {"minimum": 1, "maximum": max_cells}
    with tempfile.TemporaryDirectory() as tmp:  # the cluster as the flow names it for one run
        (Path(tmp) / AREA_SPEC_KEY).write_text(yaml.safe_dump(flow_spec(docs, AREA_SPEC_KEY)))
        cluster = cluster_spec_for_run(str(Path(tmp) / AREA_SPEC_KEY), "1f2e3d4c")
    validate_daskcluster(cluster)
    autoscaler = kube_cluster_autoscaler(cluster["metadata"]["name"], NAMESPACE, **runner.adapt_kwargs)
    validate_object(autoscaler)
    assert autoscaler["kind"] == "DaskAutoscaler" and autoscaler["metadata"]["namespace"] == NAMESPACE
    assert autoscaler["spec"] == {"cluster": cluster["metadata"]["name"], "minimum": 1, "maximum": max_cells}
    runner_role = _rules(one(docs, "Role", "srcube-flow-runner"))
    assert _allows(runner_role, DASK_GROUP, "daskautoscalers", "patch", "create")  # what KubeCluster._adapt calls
    assert _allows(runner_role, DASK_GROUP, "daskclusters", "create", "get", "delete")


def test_autoscaler_crd_validation_bites():
    good = {"apiVersion": f"{DASK_GROUP}/v1", "kind": "DaskAutoscaler", "metadata": {"name": "x"},
            "spec": {"cluster": "x", "minimum": 1, "maximum": 8}}
    assert cr_errors(good) == []
    assert any("is not of type 'integer'" in e for e in cr_errors({**good, "spec": {**good["spec"], "maximum": "8"}}))
    assert any("'cluster' is a required property" in e for e in cr_errors({**good, "spec": {"minimum": 1,
                                                                                             "maximum": 8}}))
    assert any("maximun" in e for e in cr_errors({**good, "spec": {**good["spec"], "maximun": 9}}))


# --- everything kustomize renders -------------------------------------------------------------


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_rendered_objects_validate(name: str):
    docs = rendered(name)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {
        ("Namespace", NAMESPACE),
        ("ConfigMap", "srcube-config"),
        ("ConfigMap", "srcube-daskcluster-spec"),
        ("ServiceAccount", "srcube-prefect-worker"),
        ("Role", "srcube-prefect-worker"),
        ("RoleBinding", "srcube-prefect-worker"),
        ("ServiceAccount", "srcube-flow-runner"),
        ("Role", "srcube-flow-runner"),
        ("RoleBinding", "srcube-flow-runner"),
        ("Deployment", "srcube-prefect-worker"),
        ("DaskCluster", CLUSTER),
    } <= kinds
    for doc in docs:
        validate_object(doc)
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, f"{doc['kind']}/{doc['metadata']['name']}"


@pytest.mark.parametrize("name", [*KUSTOMIZATIONS, "training"])
def test_containers_have_resources_and_run_non_root(name: str):
    seen = 0
    for where, spec in pod_specs(rendered(name)):
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] == 1000, where
        assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in spec["containers"] + spec.get("initContainers", []):
            seen += 1
            at = f"{where}/{c['name']}"
            assert c["image"] == IMAGE, at
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"].get(kind, {})), f"{at}: {kind}"
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 1000, at
            assert sc["allowPrivilegeEscalation"] is False, at
            assert sc["capabilities"] == {"drop": ["ALL"]}, at
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, at
            if sc.get("readOnlyRootFilesystem"):
                (tmp,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
                assert "emptyDir" in volumes[tmp["name"]], f"{at}: /tmp is not an emptyDir"
    assert seen >= (1 if name == "training" else 5)


@pytest.mark.parametrize("name", [*KUSTOMIZATIONS, "training"])
def test_no_secrets_and_no_literal_credentials(name: str):
    docs = rendered(name)
    assert not [d for d in docs if d["kind"] == "Secret"]
    for where, spec in pod_specs(docs):
        for c in spec["containers"] + spec.get("initContainers", []):
            for env in c.get("env", []):
                if CREDENTIAL_NAME.search(env["name"]):
                    assert "value" not in env, f"{where}: literal value for {env['name']}"
                    assert "secretKeyRef" in env["valueFrom"], f"{where}: {env['name']}"
    for cm in (d for d in docs if d["kind"] == "ConfigMap"):
        for key in cm.get("data", {}):
            if CREDENTIAL_NAME.search(key):
                assert SECRET_POINTER.search(key), f"ConfigMap/{cm['metadata']['name']}: {key} looks like a credential"


def test_settings_configmap():
    docs = rendered("base")
    data = one(docs, "ConfigMap", "srcube-config")["data"]
    assert data["PREFECT_API_URL"].startswith("http") and data["PREFECT_API_URL"].endswith("/api")
    # the operator names the scheduler Service <cluster>-scheduler
    cr = one(docs, "DaskCluster", CLUSTER)
    ns = cr["metadata"]["namespace"]
    assert data["SRCUBE_DASK_ADDRESS"] == f"tcp://{CLUSTER}-scheduler.{ns}.svc.cluster.local:8786"
    assert data["SRCUBE_OUT_PREFIX"].startswith("s3://")
    assert {"AWS_ENDPOINT_URL", "AWS_REGION"} <= set(data)
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "PREFECT_API_KEY"} & set(data)
    # GDAL settings reach every reader: srcube's defaults, written out for every pod
    from srcube.pipeline.search.access import GDAL_DEFAULTS, ReadSettings

    assert {k: data[k] for k in GDAL_DEFAULTS} == GDAL_DEFAULTS
    assert ReadSettings.capture(environ=data).as_dict() == GDAL_DEFAULTS
    assert data["SRCUBE_RESULT_STORAGE"].startswith("s3://")  # shared task results and cache records
    observer = one(docs, "ConfigMap", "srcube-prefect-worker")["data"]
    assert observer["PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_NAMESPACES"] == ns


def _rules(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def _allows(rules: dict[tuple[str, str], set[str]], group: str, resource: str, *verbs: str) -> bool:
    return set(verbs) <= rules.get((group, resource), set())


def test_rbac():
    docs = rendered("base")
    dask_verbs = ("create", "get", "list", "watch", "patch", "delete")
    dask_resources = ("daskclusters", "daskworkergroups", "daskjobs", "daskautoscalers")

    worker = _rules(one(docs, "Role", "srcube-prefect-worker"))
    assert _allows(worker, "batch", "jobs", "create", "get", "list", "watch", "delete")
    assert _allows(worker, "", "pods", "get", "list", "watch")
    assert _allows(worker, "", "pods/log", "get")
    assert _allows(worker, "", "events", "create", "get", "list", "watch")
    for resource in dask_resources:
        assert _allows(worker, DASK_GROUP, resource, *dask_verbs), resource

    runner = _rules(one(docs, "Role", "srcube-flow-runner"))
    for resource in dask_resources:
        assert _allows(runner, DASK_GROUP, resource, *dask_verbs), resource
    for resource in ("pods", "services"):
        assert _allows(runner, "", resource, "get", "list", "watch"), resource
    assert not any(group == "batch" for group, _ in runner), "flow runs do not create Jobs"
    assert not any(resource.startswith("secrets") for _, resource in {**worker, **runner}), "no Secret access"

    deployment = one(docs, "Deployment", "srcube-prefect-worker")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "srcube-prefect-worker"
    for sa in ("srcube-prefect-worker", "srcube-flow-runner"):
        binding = one(docs, "RoleBinding", sa)
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": sa}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}]


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_service_account_tokens_only_where_the_api_is_called(name: str):
    """Only the Prefect worker (it creates and watches Jobs) mounts a token; the Dask scheduler and workers
    never call the API, and the flow-runner's service account mounts none unless the pod asks."""
    docs = rendered(name)
    seen = set()
    for where, spec in pod_specs(docs):
        want = where == "Deployment/srcube-prefect-worker"
        assert spec.get("automountServiceAccountToken") is want, where
        seen.add(where)
    assert "Deployment/srcube-prefect-worker" in seen and len(seen) >= 5
    assert one(docs, "ServiceAccount", "srcube-flow-runner")["automountServiceAccountToken"] is False


def test_flow_run_pods_get_a_token_only_for_an_ephemeral_cluster():
    """The flow-run pod needs the API only when KubeCluster creates its cluster (SRCUBE_DASK_K8S_SPEC);
    every Kubernetes deployment in prefect.yaml gets a token exactly when its environment picks that mode."""
    from srcube.flows.settings import DaskSettings

    pod = job_manifest()["spec"]["template"]
    assert pod["spec"]["automountServiceAccountToken"] is False
    # the label the NetworkPolicies admit to the Dask pods; Prefect adds its own labels beside it
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "flow-run"
    ephemeral = job_manifest(automount_service_account_token=True,
                             env={"SRCUBE_DASK_ADDRESS": "", "SRCUBE_DASK_K8S_SPEC": "/etc/srcube/daskcluster.yaml"})
    validate_job(ephemeral)
    assert ephemeral["spec"]["template"]["spec"]["automountServiceAccountToken"] is True
    config = one(rendered("base"), "ConfigMap", "srcube-config")["data"]
    deployments = [d for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
                   if d["work_pool"]["name"] == "srcube-k8s"]
    assert deployments
    for dep in deployments:
        job_variables = dep["work_pool"].get("job_variables", {})
        mode = DaskSettings.from_env({**config, **(job_variables.get("env") or {})}).mode
        token = job_manifest(**job_variables)["spec"]["template"]["spec"]["automountServiceAccountToken"]
        assert token is (mode == "kubernetes"), f"{dep['name']}: mode {mode}, token {token}"


def test_prefect_worker_deployment():
    deployment = one(rendered("base"), "Deployment", "srcube-prefect-worker")
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    args = c["args"]
    assert args[:3] == ["prefect", "worker", "start"]
    assert has_flag(args, "--pool", "srcube-k8s") and has_flag(args, "--type", "kubernetes")
    assert c["livenessProbe"]["httpGet"]["path"] == "/health" and "--with-healthcheck" in args
    (api_key,) = [e for e in c["env"] if e["name"] == "PREFECT_API_KEY"]
    assert api_key["valueFrom"]["secretKeyRef"] == {"name": "prefect-api", "key": "PREFECT_API_KEY", "optional": True}


def test_image_is_pinned_by_digest_in_one_place():
    """base/kustomization.yaml's `images:` pins the image (tag for people, digest for the runtime); the
    overlays inherit it, the manifests name the image without a tag, and what kustomize cannot reach (the
    flow-run DaskCluster specs, the job template) is written by sync-flow-specs.py and checked here and in
    test_containers_have_resources_and_run_non_root / test_job_template_structure_and_placeholders."""
    assert _PIN == {"name": IMAGE_NAME, "newTag": IMAGE_TAG, "digest": _PIN.get("digest")}
    assert DIGEST.fullmatch(_PIN.get("digest") or ""), f"not a sha256 digest: {_PIN.get('digest')!r}"
    for name in ("cpu-only", "gpu"):
        assert "images" not in yaml.safe_load((KUSTOMIZATIONS[name] / "kustomization.yaml").read_text()), name
    for name in [*KUSTOMIZATIONS, "training"]:
        images = {c["image"] for _, spec in pod_specs(rendered(name)) for c in spec["containers"]}
        assert images == {IMAGE}, f"{name}: {images}"
    assert sync_script().image_of(one(rendered("base"), "DaskCluster", CLUSTER)) == IMAGE
    text = JOB_TEMPLATE.read_text()
    assert sync_script().job_template_with_image(text, IMAGE) == text, "run `python k8s/sync-flow-specs.py`"
    # the training Job's kustomization (it does not include the base) carries a copy of the pin, written by the script
    text = (TRAINING / "kustomization.yaml").read_text()
    assert sync_script().kustomization_with_image(text, IMAGE) == text, "run `python k8s/sync-flow-specs.py`"
    other = f"{IMAGE_NAME}:0.2.0@sha256:{'1' * 64}"
    assert yaml.safe_load(sync_script().kustomization_with_image(text, other))["images"] == [
        {"name": IMAGE_NAME, "newTag": "0.2.0", "digest": f"sha256:{'1' * 64}"}]
    # prefect.yaml's Kubernetes deployments name the pool's image explicitly: the same pinned one
    deployments = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    k8s_images = [d["work_pool"].get("job_variables", {}).get("image") for d in deployments
                  if d["work_pool"]["name"] == "srcube-k8s"]
    assert k8s_images and all(image in (None, IMAGE) for image in k8s_images), k8s_images
    for path in (K8S / "base" / "prefect-worker.yaml", K8S / "base" / "dask" / "daskcluster.yaml",
                 TRAINING / "job.yaml"):
        assert re.findall(r"image: (\S+)", path.read_text()) and all(
            image == "ghcr.io/srcube/srcube" for image in re.findall(r"image: (\S+)", path.read_text())
        ), f"{path}: the tag belongs in kustomization images:"


# --- the training Job (k8s/training) ----------------------------------------------------------

TRAIN = "srcube-train"


def training_job() -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(rendered objects, the Job, its pod spec, its container)."""
    docs = rendered("training")
    job = one(docs, "Job", TRAIN)
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return docs, job, pod, container


def expand(arg: str, env: dict[str, dict[str, Any]]) -> str:
    """``$(NAME)`` in a container argument as the kubelet expands it: the env entry's value (one from a
    fieldRef, known only in the pod, as a stand-in)."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: env[m.group(1)].get("value", f"<{m.group(1)}>"), arg)


def test_training_kustomization_renders_valid_objects():
    """k8s/training: the headless Service, the two claims, the policy and the Job, in namespace srcube (which the
    base makes: this kustomization makes no Namespace), each valid for Kubernetes 1.32 (strict)."""
    docs, *_ = training_job()
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs) == [
        ("Job", TRAIN), ("NetworkPolicy", "srcube-training"), ("PersistentVolumeClaim", "srcube-train-checkpoints"),
        ("PersistentVolumeClaim", "srcube-train-data"), ("Service", TRAIN)]
    for doc in docs:
        validate_object(doc)
        assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]["name"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "srcube"


def test_training_job_runs_torchrun_over_its_pods_and_gpus():
    """An Indexed Job of N pods with G GPUs each runs torchrun --nnodes N --nproc-per-node G, its c10d rendezvous on
    pod 0's name under the headless Service (on the Service's port), one rendezvous per Job; then `srcube train`
    with a config of the repository (the image copies it) whose global batch divides over N x G processes. The
    arguments are parsed by torchrun's own parser and by the srcube command line."""
    import typer
    from torch.distributed.run import get_args_parser

    from srcube.cli.commands import app
    from srcube.training.distributed import check_batch

    docs, job, pod, c = training_job()
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] >= 2
    env = {e["name"]: e for e in c["env"]}
    args = [expand(a, env) for a in c["args"]]
    assert args[0] == "torchrun"
    run = get_args_parser().parse_args(args[1:])
    gpus = c["resources"]["limits"][GPU]
    assert int(run.nnodes) == spec["completions"] and run.nproc_per_node == gpus == c["resources"]["requests"][GPU]
    assert run.rdzv_backend == "c10d" and run.max_restarts >= 1
    service = one(docs, "Service", pod["subdomain"])
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    host, port = run.rdzv_endpoint.rsplit(":", 1)
    assert host == f"{job['metadata']['name']}-0.{service['metadata']['name']}"  # pod 0 of the Indexed Job
    assert int(port) in {p["port"] for p in service["spec"]["ports"]} and int(port) in {
        p["containerPort"] for p in c["ports"]}
    # the rendezvous id: the Job's uid, from the label the Job controller gives its pods
    assert run.rdzv_id == "<SRCUBE_TRAIN_RUN>"
    assert env["SRCUBE_TRAIN_RUN"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.labels['batch.kubernetes.io/controller-uid']"
    assert run.module and run.training_script == "srcube.cli" and run.training_script_args[0] == "train"
    train = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    params = train.make_context("train", list(run.training_script_args[1:])).params
    config = REPO / params["config"]
    assert config.is_file() and params["auto_resume"] and params["nproc"] is None
    check_batch(yaml.safe_load(config.read_text())["train"]["batch_size"], int(run.nnodes) * int(gpus))


def test_training_job_resumes_from_the_checkpoints_it_shares():
    """Restarts resume: the output folder is on the ReadWriteMany claim every pod mounts (rank 0 writes, every rank
    reads the last checkpoint when it starts again, --auto-resume), failed containers restart (OnFailure) within a
    backoff limit. The data claim is mounted read-only where SRCUBE_SHARED points; /dev/shm is memory; the pods sit
    on GPU nodes as the Dask GPU workers do, and hold no service-account token."""
    import typer
    from torch.distributed.run import get_args_parser

    from srcube.cli.commands import app

    docs, job, pod, c = training_job()
    assert pod["restartPolicy"] == "OnFailure" and job["spec"]["backoffLimit"] >= 1
    assert pod["automountServiceAccountToken"] is False
    env = {e["name"]: e for e in c["env"]}
    run = get_args_parser().parse_args([expand(a, env) for a in c["args"]][1:])
    params = typer.main.get_command(app).commands["train"].make_context(  # type: ignore[attr-defined]
        "train", list(run.training_script_args[1:])).params
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}

    def claim_at(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
        (mount,) = [m for p, m in mounts.items() if path == p or path.startswith(p + "/")]
        name = volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]
        return mount, one(docs, "PersistentVolumeClaim", name)

    mount, claim = claim_at(str(params["output"]))
    assert not mount.get("readOnly") and claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert params["resume"] is False and params["auto_resume"] is True
    mount, claim = claim_at(env["SRCUBE_SHARED"]["value"])
    assert mount["readOnly"] is True and claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert volumes[mounts["/dev/shm"]["name"]]["emptyDir"]["medium"] == "Memory"
    assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}


# --- the validators bite ----------------------------------------------------------------------


def test_crd_validation_rejects_integer_gpu_quantity():
    cr = one(rendered("gpu"), "DaskCluster", CLUSTER)
    assert cr_errors(cr) == []
    bad = copy.deepcopy(cr)
    worker_container(bad)["resources"]["limits"][GPU] = 1
    errors = cr_errors(bad)
    assert any(GPU in e and "is not of type 'string'" in e for e in errors), errors


def test_crd_validation_rejects_unknown_and_missing_fields():
    (cr,) = load_docs((K8S / "base" / "dask" / "daskcluster.yaml").read_text())
    typo = copy.deepcopy(cr)
    typo["spec"]["worker"]["replica"] = typo["spec"]["worker"].pop("replicas")
    assert any("replica" in e for e in cr_errors(typo))
    missing = copy.deepcopy(cr)
    del missing["spec"]["scheduler"]["service"]
    assert any("'service' is a required property" in e for e in cr_errors(missing))


def test_kubernetes_validate_rejects_unknown_field_and_wrong_type():
    deployment = one(rendered("base"), "Deployment", "srcube-prefect-worker")
    kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, K8S_VERSION, strict=True)
    wrong = copy.deepcopy(deployment)
    wrong["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong, K8S_VERSION, strict=True)
    pod = copy.deepcopy(one(rendered("base"), "DaskCluster", CLUSTER)["spec"]["worker"]["spec"])
    pod["containers"][0]["securityContext"]["runAsNonRot"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_pod_spec(pod, "typo")


# --- Prefect work-pool base job template ------------------------------------------------------


def validate_job(manifest: dict[str, Any]) -> None:
    job = copy.deepcopy(manifest)
    pod = job["spec"]["template"]["spec"]
    # prefect-kubernetes insists on these two (misplaced) keys in the pod spec; the apiserver drops them
    assert pod.pop("parallelism") == 1 and pod.pop("completions") == 1
    job["metadata"]["name"] = job["metadata"].pop("generateName") + "x"
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)


def test_job_template_structure_and_placeholders():
    from prefect.server.schemas.actions import validate_base_job_template
    from prefect.utilities.schema_tools.validation import is_valid_schema, validate
    from prefect.utilities.templating import find_placeholders

    template = job_template()
    assert set(template) == {"job_configuration", "variables"}
    validate_base_job_template(template)  # what the server checks on `prefect work-pool create`
    used = {p.name for p in find_placeholders(template["job_configuration"])}
    declared = set(template["variables"]["properties"])
    assert used <= declared, f"placeholders without a variable: {used - declared}"
    assert {"gpu", "cpu", "memory", "image", "namespace", "service_account_name", "finished_job_ttl"} <= used
    is_valid_schema(template["variables"], preprocess=False)
    defaults = job_defaults(template)
    validate(defaults, template["variables"], raise_on_error=True, preprocess=True, ignore_required=True,
             allow_none_with_default=True)
    assert template["variables"]["properties"]["gpu"]["type"] == "integer"
    # the defaults are an orchestrating pod: no GPU, no GPU nodes, small
    assert defaults["gpu"] == 0 and defaults["node_selector"] == {} and defaults["tolerations"] == []
    assert (defaults["cpu"], defaults["memory"]) == ("1", "4Gi")
    assert defaults["image"] == IMAGE and defaults["namespace"] == NAMESPACE
    assert defaults["service_account_name"] == "srcube-flow-runner"


def test_job_template_renders_a_valid_orchestrator_job():
    manifest = job_manifest()
    validate_job(manifest)
    assert manifest["metadata"]["namespace"] == NAMESPACE
    assert manifest["spec"]["ttlSecondsAfterFinished"] > 0
    pod = manifest["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "srcube-flow-runner"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert not pod["tolerations"] and not pod["nodeSelector"]  # never scheduled onto (or holding) GPU nodes
    (c,) = pod["containers"]
    assert c["image"] == IMAGE
    assert c["resources"]["limits"] == {"cpu": "1", "memory": "4Gi", GPU: 0}
    assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and {"cpu", "memory"} <= set(c["resources"]["limits"])
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert c["args"] == ["prefect", "flow-run", "execute"]
    assert {"configMapRef": {"name": "srcube-config"}} in c["envFrom"]
    assert {"secretRef": {"name": "srcube-object-store"}} in c["envFrom"]
    assert {"secretRef": {"name": "prefect-api", "optional": True}} in c["envFrom"]
    assert {"secretRef": {"name": "srcube-catalog-credentials", "optional": True}} in c["envFrom"]
    for env in c["env"]:
        assert not (CREDENTIAL_NAME.search(env["name"]) and "value" in env), env
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert volumes[mounts["/etc/srcube"]["name"]]["configMap"]["name"] == "srcube-daskcluster-spec"
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]


def test_job_template_renders_a_valid_gpu_job():
    """A LocalCluster inside the flow-run pod on a pod GPU: asked for explicitly."""
    manifest = job_manifest(gpu=1, node_selector={"nvidia.com/gpu.present": "true"}, cpu="4", memory="16Gi",
                            tolerations=[{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}],
                            env={"SRCUBE_DASK_ADDRESS": ""})
    validate_job(manifest)
    pod = manifest["spec"]["template"]["spec"]
    assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    (c,) = pod["containers"]
    assert c["resources"]["limits"][GPU] == 1


def test_gpu_deployment_orchestrator_pod_asks_for_no_gpu():
    """The GPU deployment of prefect.yaml: its flow-run pod only orchestrates (the GPUs are in the Dask
    workers), so it requests no GPU, does not tolerate the GPU taint and selects no GPU nodes."""
    doc = yaml.safe_load((REPO / "prefect.yaml").read_text())
    (dep,) = [d for d in doc["deployments"] if d["name"] == "antwerp-s2-nightly-gpu"]
    assert dep["parameters"]["options"]["gpu"] is True  # its super-resolution does run on GPUs
    manifest = job_manifest(**dep["work_pool"]["job_variables"])
    validate_job(manifest)
    pod = manifest["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["resources"]["limits"].get(GPU, 0) == 0 and c["resources"]["requests"].get(GPU, 0) == 0
    assert not pod["nodeSelector"] and not pod["tolerations"]
    assert c["resources"]["limits"]["memory"] == "4Gi"


def test_job_template_renders_a_valid_cpu_job():
    """Ephemeral-cluster mode on CPU nodes: the env entries override SRCUBE_DASK_ADDRESS from srcube-config."""
    manifest = job_manifest(gpu=0, node_selector={}, tolerations=[], cpu="2", memory="8Gi",
                            env={"SRCUBE_DASK_ADDRESS": "", "SRCUBE_DASK_K8S_SPEC": "/etc/srcube/daskcluster.yaml"})
    validate_job(manifest)
    pod = manifest["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["resources"]["limits"] == {"cpu": "2", "memory": "8Gi", GPU: 0}
    assert not pod["tolerations"] and not pod["nodeSelector"]
    assert {"name": "SRCUBE_DASK_K8S_SPEC", "value": "/etc/srcube/daskcluster.yaml"} in c["env"]
    assert {"name": "SRCUBE_DASK_ADDRESS", "value": ""} in c["env"]


def test_job_template_refers_to_objects_the_base_creates():
    docs = rendered("base")
    manifest = job_manifest()
    pod = manifest["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    one(docs, "ServiceAccount", pod["serviceAccountName"])
    for ref in c["envFrom"]:
        if "configMapRef" in ref:
            one(docs, "ConfigMap", ref["configMapRef"]["name"])
    for volume in pod["volumes"]:
        if "configMap" in volume:
            one(docs, "ConfigMap", volume["configMap"]["name"])
    assert manifest["metadata"]["namespace"] == one(docs, "Namespace", NAMESPACE)["metadata"]["name"]
    # the mounted spec is the flow-run DaskCluster, readable by KubeCluster(custom_cluster_spec=...)
    validate_daskcluster(flow_spec(docs))


def test_job_template_validation_bites():
    manifest = job_manifest()
    typo = copy.deepcopy(manifest)
    typo["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["configMapReff"] = {"name": "x"}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_job(typo)
    from prefect.server.schemas.actions import validate_base_job_template

    undeclared = copy.deepcopy(job_template())
    undeclared["job_configuration"]["job_manifest"]["spec"]["activeDeadlineSeconds"] = "{{ deadline }}"
    with pytest.raises(ValueError, match="deadline"):
        validate_base_job_template(undeclared)


def test_create_pools_script():
    script = K8S / "prefect" / "create-pools.sh"
    text = script.read_text()
    assert "prefect work-pool create srcube-k8s --type kubernetes" in text
    assert "srcube-k8s-base-job-template.json" in text and "--overwrite" in text
    assert "prefect work-pool create srcube-local --type process --overwrite" in text
    assert os.access(script, os.X_OK)
    if shutil.which("bash"):
        assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0


# --- Dockerfile -------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def test_dockerfile():
    ins = dockerfile_instructions()
    op, base = ins[0]
    assert op == "FROM" and base.startswith("python:3.11-slim@"), "the base image, pinned by digest"
    assert DIGEST.fullmatch(base.partition("@")[2]), base
    runs = " ".join(rest for op, rest in ins if op == "RUN")
    assert re.search(r"pip install -c constraints\.txt torch==2\.13\.0", runs)
    assert re.search(r"--index-url \"?\$TORCH_INDEX_URL\"? torch==2\.13\.0", runs)
    assert re.search(r"pip install -c constraints\.txt (-e )?\"\.\[flows,k8s\]\"", runs)
    assert ("ARG", 'TORCH_INDEX_URL=""') in ins
    assert ("WORKDIR", "/opt/srcube") in ins
    copied = " ".join(rest for op, rest in ins if op == "COPY")
    # every folder the package is installed from (pyproject's package-dir), so `pip install .` in the image
    # builds the same srcube namespace as here
    import tomllib

    folders = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values())
    for path in (*(f"{d}/" for d in sorted(folders)), "pyproject.toml", "README.md", "constraints.txt", "prefect.yaml"):
        assert path in copied.split(), path
    users = [rest for op, rest in ins if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert users[-1].split(":")[0] == "1000", "the manifests run as uid 1000"
    assert [rest for op, rest in ins if op == "CMD"] == ['["srcube", "--help"]']
    assert not [op for op, _ in ins if op in ("ENTRYPOINT", "HEALTHCHECK")]
    # installs run as root, then the image switches to the unprivileged user
    last_run = max(i for i, (op, _) in enumerate(ins) if op == "RUN")
    assert last_run < max(i for i, (op, _) in enumerate(ins) if op == "USER")


def test_dockerignore():
    entries = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    for needed in (".venv", ".git", "runs", ".pytest_cache", "**/*.zarr"):
        assert needed in entries, needed
    for kept in ("pipeline", "flows", "models", "training", "cli", "srcube", "pyproject.toml", "README.md",
                 "constraints.txt",
                 "prefect.yaml"):
        assert kept not in entries, kept
