"""The Prefect flow against a real Prefect server started here on 127.0.0.1.

End to end on the sample catalog, a failure drill and its resume (chunks counted), a served
deployment triggered with run_deployment, and prefect.yaml deployed to a process work pool: its
cron schedule registered and next runs listed, a run executed by a real process worker.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from srcube.pipeline.params import DateRange
from srcube.pipeline.write.store import CubeStore, open_cube
from tests.support.flowruns import FlowRunRecord, flow_run_record
from tests.support.helpers import REPO, stop_process_group

pytestmark = pytest.mark.integration
# a corner of the sample region: a few chunks per frame, quick to run several times
BBOX = [4.465, 51.401, 4.487, 51.414]
#: the flows are under test, not the model: the bicubic baseline keeps each run a few seconds of compute
MODEL = "bicubic"
#: three clear days of the sample (two tiles each): enough for batches, an append split in two, a rerun
DATES = "2024-06-01/2024-06-22"


@pytest.fixture(scope="module")
def cluster_address(prefect_api: str) -> Iterator[str]:
    """A LocalCluster started after the server (its workers inherit PREFECT_API_URL)."""
    from distributed import LocalCluster

    # one worker process with two threads: two tasks at once for the price of one process start (its imports)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=":0") as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def reference_cube(tmp_path_factory: pytest.TempPathFactory, prefect_api: str, dask_client: object):
    """The cube run_region makes for the same request: what every flow run must reproduce."""
    from srcube.pipeline import run_region

    out = tmp_path_factory.mktemp("reference") / "ref.zarr"
    return run_region(BBOX, DATES, out=str(out), client=dask_client, model=MODEL)


def _runner(address: str):
    from srcube.flows.settings import DaskSettings

    return DaskSettings.from_env({"SRCUBE_DASK_ADDRESS": address}).task_runner()


def _same(cube, reference) -> None:
    for name in ("reflectance", "clear", "clear_count"):
        assert cube[name].equals(reference[name]), name


def _task_name(t: Any) -> str:
    numbered = ("write-batch", "search", "plan", "start", "finalize")
    return t.name.rsplit("-", 1)[0] if t.name.startswith(numbered) else t.name


@pytest.mark.slow  # ~35 s of two flow runs; appends are covered by tests/pipeline/test_append.py and the deployment
# by test_prefect_yaml_deploys_and_schedules in the default run
def test_weekly_append_deployment_run_twice_grows_one_cube(prefect_api, reference_cube, cluster_address, tmp_path):
    """The scheduled deployments' way (options.mode = append, one cube per region): two runs of consecutive
    periods give one cube with both periods' dates, equal to the cube of the whole range."""
    from srcube.flows.region import region_flow

    weekly = yaml.safe_load((REPO / "prefect.yaml").read_text())
    deployment = next(d for d in weekly["deployments"] if d["name"] == "antwerp-s2-weekly")
    assert deployment["parameters"]["options"]["mode"] == "append" and "{" not in deployment["parameters"]["out"]
    flow = region_flow.with_options(task_runner=_runner(cluster_address))
    out = str(tmp_path / "antwerp.zarr")
    first, second = DateRange.parse(DATES).start, DateRange.parse(DATES).end
    middle = first + (second - first) / 2
    runs = [flow(bbox=BBOX, dates=f"{first}/{middle}", out=out, model=MODEL, options={"mode": "append"}),
            flow(bbox=BBOX, dates=f"{middle}/{second}", out=out, model=MODEL, options={"mode": "append"})]
    assert runs[0]["complete"] is True and runs[1]["appended"] is True and runs[1]["appends"] == 1
    grown = open_cube(out)
    assert grown.sizes["time"] == reference_cube.sizes["time"] == runs[1]["time_steps"]
    _same(grown, reference_cube)


def test_flow_end_to_end_on_local_cluster(prefect_api, reference_cube, tmp_path):
    """Default task runner (a LocalCluster per flow run): tasks, artifact and logs on the server."""
    from srcube.flows.region import region_flow
    from srcube.flows.settings import DaskSettings

    out = tmp_path / "flow.zarr"
    runner = DaskSettings.from_env({"SRCUBE_DASK_WORKERS": "1"}).task_runner()
    state = region_flow.with_options(task_runner=runner)(bbox=BBOX, dates=DATES, out=str(out), model=MODEL,
                                                          batch_chunks=2,
                                                          return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert result["complete"] is True and result["chunk_writes"] == result["total_chunks"] > 0
    assert result["batches"] > 1 and result["cached_batches"] == 0
    _same(open_cube(str(out)), reference_cube)

    def recorded(r: FlowRunRecord) -> bool:
        text = "\n".join(entry.message for entry in r.logs)  # logs reach the API in batches
        return (sum(_task_name(t) == "write-batch" for t in r.tasks) == result["batches"]
                and "chunks written" in text and "items in sentinel-2-l2a" in text)

    record = flow_run_record(state.state_details.flow_run_id, until=recorded)
    run, tasks, artifacts, logs = record.run, record.tasks, record.artifacts, record.logs
    assert run.state.is_completed()
    names = sorted(_task_name(t) for t in tasks)
    assert {"search", "plan-frames", "start-cube", "finalize-cube"} <= set(names)
    assert names.count("write-batch") == result["batches"]
    assert all(t.state.is_completed() for t in tasks)
    md = next(a for a in artifacts if a.key == "srcube-region")
    assert md.type == "markdown" and str(out) in md.data and "data:image/png;base64," in md.data
    assert f"| chunks written by this run | {result['total_chunks']} |" in md.data
    text = "\n".join(entry.message for entry in logs)
    assert "chunks written" in text and "items in sentinel-2-l2a" in text


def test_the_failure_drill_is_read_from_the_environment_only(monkeypatch):
    from srcube.flows.region import FAIL_AT_BATCH_ENV, drill_batch
    from srcube.pipeline.errors import InvalidOptionError

    monkeypatch.delenv(FAIL_AT_BATCH_ENV, raising=False)
    assert drill_batch() is None
    monkeypatch.setenv(FAIL_AT_BATCH_ENV, " 2 ")
    assert drill_batch() == 2
    monkeypatch.setenv(FAIL_AT_BATCH_ENV, "second")
    with pytest.raises(InvalidOptionError, match=f"{FAIL_AT_BATCH_ENV}='second'.*for tests only"):
        drill_batch()


@pytest.mark.slow  # ~16 s; resuming only missing chunks is covered by test_cli's interrupted run and
# test_bad_input's full disk then resume, and the flow itself by test_flow_end_to_end_on_local_cluster
def test_failed_flow_rerun_recomputes_only_missing_chunks(prefect_api, cluster_address, reference_cube, tmp_path,
                                                          monkeypatch):
    from srcube.flows.region import FAIL_AT_BATCH_ENV, InjectedFailure, region_flow

    out = tmp_path / "drill.zarr"
    flow = region_flow.with_options(task_runner=_runner(cluster_address))
    with monkeypatch.context() as drill:  # the drill is test-only: an environment variable, not a parameter
        drill.setenv(FAIL_AT_BATCH_ENV, "1")
        failed = flow(bbox=BBOX, dates=DATES, out=str(out), model=MODEL, batch_chunks=1, return_state=True)
    assert failed.is_failed()
    with pytest.raises(InjectedFailure):
        failed.result()
    store = CubeStore(str(out))
    assert store.status() == "incomplete"
    total = sum(store.expected().values())
    done_before = sum(len(store.done(name)) for name in store.expected())
    assert 0 < done_before < total
    tasks = flow_run_record(failed.state_details.flow_run_id,
                            until=lambda r: any(t.name.startswith("write-batch") and t.state.is_failed()
                                                for t in r.tasks)).tasks
    batches = [t for t in tasks if t.name.startswith("write-batch")]
    assert sum(t.state.is_failed() for t in batches) == 1  # the drill's batch, and not retried
    assert next(t for t in batches if t.state.is_failed()).run_count == 1
    completed_batches = sum(t.state.is_completed() for t in batches)

    again = flow(bbox=BBOX, dates=DATES, out=str(out), model=MODEL, batch_chunks=1, return_state=True)
    assert again.is_completed(), again.message
    result = again.result()
    # only the chunks missing from the manifest were computed; finished batches came from the cache
    assert result["chunk_writes"] == total - done_before
    assert result["cached_batches"] == completed_batches > 0
    print(f"failure drill: {total} chunk writes in the cube, {done_before} in before the failure, "
          f"{result['chunk_writes']} written by the re-run, {completed_batches} batches from the cache")
    cube = open_cube(str(out))
    assert cube.attrs["last_run"]["chunk_writes"] == total - done_before
    _same(cube, reference_cube)


@pytest.mark.slow  # two flow runs through a 1 s token service (~50 s); test_access covers signing in the default run
def test_flow_retry_outlives_expiring_signed_urls(prefect_api, cluster_address, sample_dir, tmp_path, monkeypatch):
    """Planetary-Computer-style signing: the flow and its retry read through a blob service whose tokens
    die after 100 requests, and all at once between the failed run and its retry. Nothing signed reaches the
    flow's parameters, task results or the cube."""
    from distributed import Client

    from srcube.flows.region import FAIL_AT_BATCH_ENV, InjectedFailure, region_flow
    from srcube.pipeline import run_region
    from srcube.pipeline.testing.stac_server import StacServer
    from tests.support.servers import BlobService, rehosted_catalog

    dates = "2024-06-12/2024-06-22"
    reference = run_region(BBOX, dates, catalog="sample", out=str(tmp_path / "ref.zarr"), tile=64, model=MODEL)
    with BlobService(sample_dir, uses=100) as blob, Client(cluster_address) as workers:
        root = rehosted_catalog(sample_dir, tmp_path / "blob-catalog", blob.href)
        # the environment of the flow process and of the Dask workers, as a ConfigMap gives it on Kubernetes:
        # the SAS endpoint, and GDAL's proxy to the blob service
        env = {"PC_SDK_SAS_URL": blob.sas_url, "GDAL_HTTP_PROXY": blob.address}
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        workers.run(lambda: os.environ.update(env))
        try:
            with StacServer(root) as stac:
                flow = region_flow.with_options(task_runner=_runner(cluster_address))
                params = {"bbox": BBOX, "dates": dates, "catalog": stac.url, "out": str(tmp_path / "pc.zarr"),
                          "model": MODEL, "options": {"auth": "planetary-computer", "tile": 64}, "batch_chunks": 1}
                with monkeypatch.context() as drill:
                    drill.setenv(FAIL_AT_BATCH_ENV, "1")
                    failed = flow(**params, return_state=True)
                assert failed.is_failed()
                with pytest.raises(InjectedFailure):
                    failed.result()
                blob.revoke()  # every token issued so far is dead
                again = flow(**params, return_state=True)
                assert again.is_completed(), again.message
        finally:
            workers.run(lambda: [os.environ.pop(k, None) for k in env])
        counts = blob.counts
    assert counts["refused"] >= 1 and counts["tokens"] >= 3, counts  # tokens died and reads re-signed
    _same(open_cube(str(tmp_path / "pc.zarr")), reference)
    run = flow_run_record(again.state_details.flow_run_id).run
    assert "sig=" not in json.dumps(run.parameters)
    assert "sig=" not in json.dumps(open_cube(str(tmp_path / "pc.zarr")).attrs)
    stored = [p.read_bytes() for p in Path(os.environ["PREFECT_HOME"]).rglob("*") if p.is_file() and
              p.stat().st_size < 50_000_000 and "storage" in p.parts]
    assert stored and not any(b"sig=" in b for b in stored)  # nothing signed in persisted results and caches


def test_bad_request_fails_the_flow_before_any_task(prefect_api, tmp_path):
    from srcube.flows.region import region_flow
    from srcube.pipeline.errors import InvalidBBoxError, InvalidDatesError

    for kwargs, error in (({"bbox": [5, 51, 4, 52]}, InvalidBBoxError), ({"dates": "next 3 days"}, InvalidDatesError)):
        params = {"bbox": BBOX, "dates": DATES, "out": str(tmp_path / "never.zarr"), **kwargs}
        state = region_flow(**params, return_state=True)
        assert state.is_failed()
        with pytest.raises(error):
            state.result()
        tasks = flow_run_record(state.state_details.flow_run_id).tasks
        assert tasks == []
    assert not (tmp_path / "never.zarr").exists()


def test_relative_dates_end_on_the_scheduled_day():
    from srcube.flows.region import build_request

    req = build_request(BBOX, "last 30 days", "sample", None, None, "bicubic", None, "cubes/{start}_{end}.zarr",
                        None, today=dt.date(2024, 6, 30))
    assert req.dates == "2024-06-01/2024-06-30" == str(DateRange.parse("last 30 days", today=dt.date(2024, 6, 30)))
    assert req.out == "cubes/2024-06-01_2024-06-30.zarr"


def _wait_for_deployment(name: str, proc: subprocess.Popen, timeout: float = 120):
    from prefect.client.orchestration import get_client

    async def read():
        async with get_client() as client:
            return await client.read_deployment_by_name(name)

    deadline = time.monotonic() + timeout
    while True:
        try:
            return asyncio.run(read())
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.mark.slow  # 25-60 s of serve-process start and polling; the deploy and end-to-end tests stay in the default run
def test_served_deployment_run_deployment_completes(prefect_api, cluster_address, reference_cube, tmp_path):
    from prefect.deployments import run_deployment

    params = {"bbox": BBOX, "dates": DATES, "out": str(tmp_path / "served-{start}.zarr"), "model": MODEL}
    env = {**os.environ, "SRCUBE_DASK_ADDRESS": cluster_address, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "srcube.flows.serve", "--name", "served",
                             "--params", json.dumps(params)], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        deployment = _wait_for_deployment("srcube-region/served", proc)
        assert deployment.parameters["out"].endswith("served-{start}.zarr")
        run = run_deployment("srcube-region/served", timeout=300, poll_interval=1)
        assert run.state is not None and run.state.is_completed(), run.state
    finally:
        stop_process_group(proc)
    _same(open_cube(str(tmp_path / "served-2024-05-01.zarr")), reference_cube)


def _prefect(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prefect", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


def test_prefect_yaml_deploys_and_schedules(prefect_api, cluster_address):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    env = {**os.environ, "SRCUBE_DASK_ADDRESS": cluster_address, "PYTHONPATH": str(REPO)}
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    weekly = next(d for d in spec["deployments"] if d["name"] == "antwerp-s2-weekly")

    async def pools() -> None:
        # the work pools (k8s/prefect/create-pools.sh makes them with the CLI): a process pool, and a kubernetes
        # pool from srcube's base job template, against whose schema the server checks each deployment's variables
        template = json.loads((REPO / "k8s/prefect/srcube-k8s-base-job-template.json").read_text())
        async with get_client() as client:
            await client.create_work_pool(WorkPoolCreate(name="srcube-local", type="process"), overwrite=True)
            await client.create_work_pool(WorkPoolCreate(name="srcube-k8s", type="kubernetes",
                                                         base_job_template=template), overwrite=True)

    asyncio.run(pools())
    # one `prefect deploy` of every deployment in prefect.yaml, as an operator deploys them
    res = _prefect("--no-prompt", "deploy", "--name", "sample-demo", "--name", "antwerp-s2-weekly", "--name",
                   "sample-area", "--name", "antwerp-s2-nightly-gpu", "--name", "belgium-s2-area-weekly", env=env)
    assert res.returncode == 0, res.stdout + res.stderr

    async def scheduled(name: str, want: int, timeout: float = 60):
        async with get_client() as client:
            dep = await client.read_deployment_by_name(name)
            deadline = time.monotonic() + timeout
            while True:
                runs = await client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])),
                    flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                        type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))))
                if len(runs) >= want or time.monotonic() > deadline:
                    return dep, sorted(r.expected_start_time for r in runs)
                await asyncio.sleep(0.5)

    async def read(name: str):
        async with get_client() as client:
            return await client.read_deployment_by_name(name)

    gpu_dep = asyncio.run(read("srcube-region/antwerp-s2-nightly-gpu"))
    assert gpu_dep.work_pool_name == "srcube-k8s" and gpu_dep.job_variables["gpu"] == 0
    assert gpu_dep.pull_steps[0]["prefect.deployments.steps.set_working_directory"]["directory"] == "/opt/srcube"
    assert [s.schedule.cron for s in gpu_dep.schedules] == ["30 2 * * *"]
    assert gpu_dep.parameters["out"].startswith("s3://") and gpu_dep.parameters["options"]["gpu"] is True
    # the areas: the sample's on the process pool, a country's on Kubernetes with a Dask cluster per run that
    # the operator autoscales up to as many workers as the run has cells in flight
    sample_area = asyncio.run(read("srcube-area/sample-area"))
    assert sample_area.work_pool_name == "srcube-local" and sample_area.parameters["max_cells"] == 2
    country = asyncio.run(read("srcube-area/belgium-s2-area-weekly"))
    assert country.work_pool_name == "srcube-k8s" and [s.schedule.cron for s in country.schedules] == ["0 5 * * 1"]
    assert country.parameters["out"].startswith("s3://") and country.parameters["options"]["mode"] == "append"
    assert country.parameters["dates"] == "last 30 days"
    env = country.job_variables["env"]
    assert env["SRCUBE_DASK_K8S_SPEC"] == "/etc/srcube/daskcluster-area.yaml" and env["SRCUBE_DASK_ADDRESS"] == ""
    assert int(env["SRCUBE_DASK_K8S_MAX_WORKERS"]) == country.parameters["max_cells"] > 1
    assert country.job_variables["automount_service_account_token"] is True

    dep, next_runs = asyncio.run(scheduled("srcube-region/antwerp-s2-weekly", 3))
    assert [s.schedule.cron for s in dep.schedules] == [weekly["schedules"][0]["cron"]]
    assert dep.parameters["dates"] == "last 30 days" and dep.work_pool_name == "srcube-local"
    assert dep.pull_steps[0]["prefect.deployments.steps.set_working_directory"]["directory"] == str(REPO)
    assert len(next_runs) >= 3
    # "0 4 * * 1": the coming Mondays at 04:00 UTC, one week apart
    now = dt.datetime.now(dt.UTC)
    first = (now + dt.timedelta(days=(7 - now.weekday()) % 7)).replace(hour=4, minute=0, second=0, microsecond=0)
    first = first if first > now else first + dt.timedelta(days=7)
    assert [t.astimezone(dt.UTC) for t in next_runs] == [first + dt.timedelta(weeks=i) for i in range(len(next_runs))]



@pytest.mark.slow  # about 30 s of process start-up (a worker, then the flow-run process); -m slow runs it
def test_a_process_worker_runs_the_sample_deployment(prefect_api, cluster_address, reference_cube, tmp_path):
    """A manual run of prefect.yaml's sample deployment, picked up and run by a real process worker."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    env = {**os.environ, "SRCUBE_DASK_ADDRESS": cluster_address, "PYTHONPATH": str(REPO)}
    res = _prefect("work-pool", "create", "srcube-local", "--type", "process", "--overwrite", env=env)
    assert res.returncode == 0, res.stderr
    res = _prefect("--no-prompt", "deploy", "--name", "sample-demo", env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    out = tmp_path / "worker-{start}.zarr"
    run = run_deployment("srcube-region/sample-demo", parameters={"bbox": BBOX, "out": str(out), "model": MODEL},
                         timeout=0)
    worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", "srcube-local",
                               "--type", "process", "--limit", "1"], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        async def finished(timeout: float = 300):
            async with get_client() as client:
                deadline = time.monotonic() + timeout
                while True:
                    fr = await client.read_flow_run(run.id)
                    if (fr.state and fr.state.is_final()) or time.monotonic() > deadline:
                        return fr
                    await asyncio.sleep(1)

        fr = asyncio.run(finished())
    finally:
        stop_process_group(worker)
    assert fr.state is not None and fr.state.is_completed(), fr.state
    _same(open_cube(str(tmp_path / "worker-2024-05-01.zarr")), reference_cube)
