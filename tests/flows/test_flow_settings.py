"""Flow plumbing without a server: cluster settings, per-run DaskCluster specs, retry decisions,
relative dates and write batches."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import urllib.parse

import psutil
import pytest
import yaml

from srcube.pipeline.errors import (
    AllCloudyError,
    CatalogUnavailableError,
    InvalidBBoxError,
    InvalidDatesError,
    InvalidOptionError,
    WeightsNotFoundError,
    is_transient,
)
from srcube.pipeline.params import DateRange
from tests.support.helpers import REPO


def test_dask_settings_from_env():
    from srcube.flows.settings import DaskSettings

    assert DaskSettings.from_env({}).mode == "local"
    assert DaskSettings.from_env({"SRCUBE_DASK_WORKERS": "3"}).n_workers == 3
    s = DaskSettings.from_env({"SRCUBE_DASK_ADDRESS": "tcp://sched:8786", "SRCUBE_DASK_K8S_SPEC": "/x.yaml"})
    assert (s.mode, s.address) == ("address", "tcp://sched:8786")  # the address wins
    k = DaskSettings.from_env({"SRCUBE_DASK_ADDRESS": " ", "SRCUBE_DASK_K8S_SPEC": "/etc/srcube/daskcluster.yaml",
                               "SRCUBE_DASK_K8S_NAMESPACE": "srcube", "SRCUBE_DASK_K8S_MAX_WORKERS": "8"})
    assert (k.mode, k.k8s_spec, k.k8s_namespace, k.k8s_max_workers) == (
        "kubernetes", "/etc/srcube/daskcluster.yaml", "srcube", 8)
    for env in ({"SRCUBE_DASK_WORKERS": "two"}, {"SRCUBE_DASK_WORKERS": "0"}, {"SRCUBE_DASK_ADDRESS": "sched:8786"},
                {"SRCUBE_DASK_K8S_SPEC": "/x", "SRCUBE_DASK_K8S_MAX_WORKERS": "many"}):
        with pytest.raises(InvalidOptionError):
            DaskSettings.from_env(env)


def test_task_runners_per_mode():
    from prefect_dask import DaskTaskRunner

    from srcube.flows.settings import DaskSettings

    local = DaskSettings.from_env({"SRCUBE_DASK_WORKERS": "2"}).task_runner()
    assert isinstance(local, DaskTaskRunner) and local.cluster_kwargs["n_workers"] == 2
    assert local.cluster_kwargs["threads_per_worker"] == 1
    attached = DaskSettings.from_env({"SRCUBE_DASK_ADDRESS": "tcp://10.0.0.1:8786"}).task_runner()
    assert attached.address == "tcp://10.0.0.1:8786"
    kube = DaskSettings.from_env({"SRCUBE_DASK_K8S_SPEC": "/etc/srcube/daskcluster.yaml",
                                  "SRCUBE_DASK_K8S_MAX_WORKERS": "4"}).task_runner()
    assert kube.cluster_class.func.__name__ == "kube_cluster"
    assert kube.cluster_class.keywords == {"custom_cluster_spec": "/etc/srcube/daskcluster.yaml"}
    assert kube.adapt_kwargs == {"minimum": 1, "maximum": 4}


def _listening(processes: list[psutil.Process]) -> set[tuple[int, str, int]]:
    """(pid, address, port) of every TCP socket the processes listen on."""
    return {(p.pid, c.laddr.ip, c.laddr.port) for p in processes
            for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}


#: a flow process's cluster: the task runner entered as the flow enters it, its addresses printed, held open until
#: stdin closes
_HOLD_CLUSTER = """
import json, sys
from srcube.flows.settings import DaskSettings
with DaskSettings.from_env({"SRCUBE_DASK_WORKERS": "1"}).task_runner() as runner:
    client = runner.client
    print(json.dumps({"dashboard": client.dashboard_link, "scheduler": client.scheduler.address}), flush=True)
    sys.stdin.read()
"""


def test_local_cluster_listens_on_loopback_only():
    """The flow's LocalCluster, started as the flow starts it (its DaskTaskRunner), opens its scheduler, its
    dashboard and its worker processes on 127.0.0.1 only: nothing on the pod's or machine's network.

    The runner runs in a process of its own, as in a flow run: in the test process a default Dask client left by
    another test (the session's ``dask_client``) would be attached to instead of a cluster being started."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLD_CLUSTER], cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line, f"rc {proc.poll()}: the flow process printed no addresses"
        addresses = json.loads(line)
        flow = psutil.Process(proc.pid)
        workers = flow.children(recursive=True)  # the cluster's worker processes: a fresh process has no others
        opened = _listening([flow, *workers])
    finally:
        _, err = proc.communicate("", timeout=120)  # stdin closed: the cluster closes and the process ends
    assert proc.returncode == 0, err[-4000:]
    dashboard = urllib.parse.urlsplit(addresses["dashboard"])
    scheduler = urllib.parse.urlsplit(addresses["scheduler"])
    assert (dashboard.hostname, scheduler.hostname) == ("127.0.0.1", "127.0.0.1")
    assert workers, "the LocalCluster's workers run in their own processes"
    ports = {port for _, _, port in opened}
    assert dashboard.port in ports and scheduler.port in ports
    assert {pid for pid, _, _ in opened} - {flow.pid}, "the worker processes listen too"
    assert {address for _, address, _ in opened} == {"127.0.0.1"}, sorted(opened)


def test_ephemeral_cluster_needs_kubernetes_credentials(tmp_path, monkeypatch):
    """A flow-run pod without a service-account token (the job template's default) asking for a cluster per
    run gets the typed error that says which job variable to set, before any Kubernetes client is made."""
    from srcube.flows.settings import kube_cluster, require_kubernetes_credentials

    token = tmp_path / "token"
    in_pod = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "HOME": str(tmp_path)}
    with pytest.raises(InvalidOptionError, match="automount_service_account_token: true"):
        require_kubernetes_credentials(in_pod, token_path=str(token))
    require_kubernetes_credentials({"HOME": str(tmp_path)}, token_path=str(token))  # not in a pod: kubeconfig as usual
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    require_kubernetes_credentials({**in_pod, "KUBECONFIG": str(kubeconfig)}, token_path=str(token))
    token.write_text("a-token")
    require_kubernetes_credentials(in_pod, token_path=str(token))

    from srcube.flows.settings import SERVICE_ACCOUNT_TOKEN

    if os.path.exists(SERVICE_ACCOUNT_TOKEN):
        pytest.skip("this machine is a pod with a service-account token")
    for key, value in in_pod.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    with pytest.raises(InvalidOptionError, match="no service-account token"):
        kube_cluster(str(REPO / "k8s/base/dask/daskcluster-flow.yaml"))


@pytest.mark.parametrize("spec", ["k8s/base/dask/daskcluster-flow.yaml", "k8s/overlays/gpu/daskcluster-flow.yaml"])
def test_per_run_cluster_spec_is_renamed_consistently_and_valid(spec):
    from srcube.flows.settings import cluster_spec_for_run
    from tests.support.k8s import validate_daskcluster

    a = cluster_spec_for_run(str(REPO / spec), "1F2e3d4c")
    b = cluster_spec_for_run(str(REPO / spec), "99aa00bb")
    original = yaml.safe_load((REPO / spec).read_text())
    assert a["metadata"]["name"] == f"{original['metadata']['name']}-1f2e3d4c" != b["metadata"]["name"]
    # the scheduler Service selects the pods the operator labels with the new name
    assert a["spec"]["scheduler"]["service"]["selector"]["dask.org/cluster-name"] == a["metadata"]["name"]
    validate_daskcluster(a)


def test_per_run_cluster_spec_rejects_other_manifests(tmp_path):
    from srcube.flows.settings import cluster_spec_for_run

    bad = tmp_path / "deployment.yaml"
    bad.write_text("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n")
    with pytest.raises(InvalidOptionError, match="not a DaskCluster"):
        cluster_spec_for_run(str(bad), "abc")


class _HTTPError(Exception):
    """Stands in for a client library's HTTP error class (matched by name)."""

    def __init__(self, status: int):
        super().__init__(status)
        self.status_code = status


@pytest.mark.parametrize(("exc", "transient"), [
    (CatalogUnavailableError("catalog down"), True),
    (ConnectionResetError(), True),
    (TimeoutError(), True),
    (socket.gaierror(), True),
    (OSError(5, "I/O error"), True),
    (FileNotFoundError("asset"), False),
    (PermissionError("denied"), False),
    (InvalidBBoxError("bad"), False),
    (AllCloudyError("cloudy"), False),
    (WeightsNotFoundError("none"), False),
    (ValueError("bug"), False),
    (RuntimeError("bug"), False),
    (type("APIError", (_HTTPError,), {})(503), True),
    (type("APIError", (_HTTPError,), {})(429), True),
    (type("APIError", (_HTTPError,), {})(404), False),
    (type("ClientError", (_HTTPError,), {})(500), True),
])
def test_is_transient(exc, transient):
    assert is_transient(exc) is transient


def test_is_transient_follows_the_cause():
    try:
        try:
            raise ConnectionResetError("peer reset")
        except ConnectionResetError as inner:
            raise RuntimeError("read failed") from inner
    except RuntimeError as outer:
        assert is_transient(outer)


def test_retry_condition_reads_the_failed_state():
    from prefect.states import Failed

    from srcube.flows.region import InjectedFailure, _retry_if_transient

    assert _retry_if_transient(None, None, Failed(data=ConnectionResetError("x")))
    assert not _retry_if_transient(None, None, Failed(data=InjectedFailure("drill")))
    assert not _retry_if_transient(None, None, Failed(data=InvalidBBoxError("bad")))


@pytest.mark.parametrize(("spec", "want"), [
    ("last 30 days", "2024-06-01/2024-06-30"),
    ("last 1 day", "2024-06-30/2024-06-30"),
    ("last week", "2024-06-24/2024-06-30"),
    ("past 2 weeks", "2024-06-17/2024-06-30"),
    ("Last_7_Days", "2024-06-24/2024-06-30"),
    ("  last  3   days ", "2024-06-28/2024-06-30"),
    ("yesterday", "2024-06-29/2024-06-29"),
    ("today", "2024-06-30/2024-06-30"),
])
def test_relative_dates(spec, want):
    assert str(DateRange.parse(spec, today=dt.date(2024, 6, 30))) == want


@pytest.mark.parametrize("spec", ["last 0 days", "next 3 days", "last -2 days", "last 3 months", "recently"])
def test_bad_relative_dates(spec):
    with pytest.raises(InvalidDatesError):
        DateRange.parse(spec, today=dt.date(2024, 6, 30))


def test_out_placeholders_and_bad_ones(tmp_path):
    from srcube.flows.region import build_request

    req = build_request([4.465, 51.401, 4.487, 51.414], "2024-05-01/2024-05-31", "sample", None, None, "bicubic",
                        None, str(tmp_path / "{bbox}" / "{start}_{end}.zarr"), {"min_clear": 0.4})
    assert req.out == str(tmp_path / "4.4650_51.4010_4.4870_51.4140" / "2024-05-01_2024-05-31.zarr")
    assert req.options.given() == {"min_clear": 0.4} and req.to_json()["options"] == {"min_clear": 0.4}
    with pytest.raises(InvalidOptionError, match="placeholders"):
        build_request([4.465, 51.401, 4.487, 51.414], "2024-05-01/2024-05-31", "sample", None, None, "bicubic",
                      None, "cubes/{region}.zarr", None)
    with pytest.raises(InvalidOptionError, match="min_clear"):
        build_request([4.465, 51.401, 4.487, 51.414], "2024-05-01/2024-05-31", "sample", None, None, "bicubic",
                      None, "cubes/x.zarr", {"min_clear": 2})


@pytest.mark.integration
def test_write_batches_cover_every_chunk_once_and_keep_locations_together(sample_dir, dask_client, tmp_path):
    from srcube.pipeline.region import RegionJob
    from srcube.pipeline.testing import sample

    job = RegionJob.prepare(sample.DEFAULT_BBOX, sample.DEFAULT_DATES, out=str(tmp_path / "c.zarr"))
    job.load(dask_client)
    job.decide(dask_client)
    job.build(dask_client)
    job.start()
    batches = job.batches(3)
    flat = [w for b in batches for w in b]
    assert len(flat) == len(set(flat)) == len(job.pending()) == sum(job.plan.store.expected().values())
    assert job.batches(3) == batches  # deterministic: re-runs recognise finished batches
    for b in batches:  # at most 3 (time, y, x) locations; a location's layers travel with its reflectance
        where = {(n, dict(zip(job.cube[n].dims, i, strict=True)).get("time", -1), i[-2], i[-1]) for n, i in b}
        assert len({w[1:] for w in where}) <= 3
        assert all(("reflectance", *w[1:]) in where for w in where if w[0] == "clear")
    with pytest.raises(InvalidOptionError):
        job.batches(0)


def test_the_flow_parameter_schema_is_the_run_options_model():
    """Prefect's parameter schema of the flow (deployments, the UI's run form) lists every run option with the
    model's help text, default, bounds and choices: it is generated from RunOptions, not written twice."""
    from prefect.utilities.callables import parameter_schema

    from srcube.flows.region import region_flow
    from srcube.pipeline.options import RunOptions, choices

    schema = parameter_schema(region_flow.fn).model_dump()
    # the request and the batching, nothing else: the failure drill is test-only (an environment variable)
    assert list(schema["properties"]) == ["bbox", "dates", "catalog", "collection", "bands", "model", "scale", "out",
                                          "options", "batch_chunks"]
    props = schema["definitions"]["RunOptions"]["properties"]
    assert set(props) == set(RunOptions.model_fields)
    for name, f in RunOptions.model_fields.items():
        assert props[name]["description"] == f.description
        if choices(name):
            values = props[name].get("enum") or [v for alt in props[name].get("anyOf", []) for v in alt.get("enum", [])]
            assert values == list(choices(name)), name
    assert props["min_clear"]["minimum"] == 0 and props["min_clear"]["maximum"] == 1
    assert RunOptions(**{"dtype": "int16", "clear_classes": [4, 5]}).given() == {"dtype": "int16",
                                                                                "clear_classes": [4, 5]}
