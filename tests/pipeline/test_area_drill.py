"""The area drill (issue 23, item 6): an area run on a cluster the way production runs it, on one machine.

Every part is a process of its own, as pods are (:mod:`tests.support.cluster`): moto's S3 server holding the cubes,
``dask scheduler``, three ``dask worker`` pods (Nanny + worker process, two threads each), and the area's client,
``srcube run-area --scheduler ...`` (the flow runner's job). Where ``ip netns`` is permitted (root) each worker pod
has a network namespace of its own on a bridge, and its own loopback where its local STAC API over the sample
archive runs (``catalog="sample"``; the assets are ``file://`` hrefs on the shared disk); the scheduler, the object
store and the client listen on the bridge's address. The object store's endpoint and credentials reach every pod as
environment (``AWS_ENDPOINT_URL``, as the Kubernetes ConfigMap and Secret give them).

The drill (``slow``): each worker pod also has a hostname of its own, as on Kubernetes. Mid-run, a worker pod that
holds a cell's lock (it is writing that cell) is SIGKILLed, Nanny and all, and another that holds one loses its
network: its ``eth0`` goes down for 20 s, then up. The area must end with every one of its 6 cells complete, no lock
left, and every cell's cube byte-identical to a run of the same area in one process (threads): every stored chunk,
and every metadata document but the attributes that differ between any two runs. The killed pod's lock is only
known dead by its heartbeat (120 s): the cell's next attempt waits for it (``run_area``'s ``lock_wait``).

A smaller drill (also ``slow``, about 80 s): the same cluster and checks, one SIGKILL, no partition, and the pods
share this machine's hostname (a killed pod's lock is then known dead at once: its pid is gone). The default run
keeps the cross-machine stale lock below; a lost worker and a failing cell are covered there by test_reliability and
test_area.

Without ``ip netns`` (not root, or refused), the pods run on loopback ports and the "partition" freezes the pod
(SIGSTOP, then SIGCONT): it neither sends nor answers for 20 s, but its connections stay up, which a real partition
does not promise; the test prints which one ran.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from srcube.pipeline import area as area_mod
from srcube.pipeline.area import SUMMARY, cell_url, run_area
from srcube.pipeline.cells import cells_of
from srcube.pipeline.errors import StaleLockWarning
from srcube.pipeline.write.store import CubeStore
from tests.support.cluster import BIN, Cluster, Pod, cluster, netns_unavailable
from tests.support.helpers import S3_CREDS

pytestmark = pytest.mark.integration

AREA = (4.47, 51.405, 4.485, 51.415)  # 6 cells of 0.9 km over the sample archive (tests/pipeline/test_area.py)
DATES = "2024-06-01/2024-06-14"  # two dates: cells take long enough on a loaded machine to be hit mid-way
KM = 0.9
RUN = {"catalog": "sample", "model": "bicubic", "scale": 4, "bands": ["B04", "B08"], "min_clear": 0.0, "tile": 64}
PARTITION_S = 20.0
#: attributes of a cube's root that differ between any two runs of the same request: when it was made, this run's
#: timings and what it did (resumed, chunks computed), the id of the template it started from
VARY = ("created", "timings_s", "last_run", "template_id")


@dataclass
class Drill:
    """What happened: the summary, the faults as they were done, each cell's story, the area client's log."""

    summary: dict[str, Any]
    faults: list[str] = field(default_factory=list)
    cells: dict[str, list[str]] = field(default_factory=dict)
    client_log: str = ""
    seconds: float = 0.0

    def report(self) -> str:
        lines = [*self.faults, json.dumps({k: self.summary[k] for k in ("cells", "done", "skipped", "failed",
                                                                         "seconds")})]
        lines += [f"{cell}: {' -> '.join(story)}" for cell, story in sorted(self.cells.items())]
        return "\n".join(lines)


def _cli(c: Cluster, out: str, log: Path) -> Pod:
    """``srcube run-area`` on the scheduler: the area's client, a process of its own on the node."""
    argv = [str(BIN / "srcube"), "run-area", "--area", ",".join(map(str, AREA)), "--dates", DATES, "--out", out,
            "--cell-km", str(KM), "--scheduler", c.scheduler_address, "--catalog", RUN["catalog"],
            "--model", RUN["model"], "--scale", str(RUN["scale"]), "--bands", ",".join(RUN["bands"]),
            "--min-clear", "0", "--tile", str(RUN["tile"])]
    return Pod("run-area", argv, {**c.env, "COLUMNS": "200"}, log).start()


def _s3(c: Cluster) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=c.s3_local, region_name=S3_CREDS["AWS_REGION"],
                        aws_access_key_id=S3_CREDS["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=S3_CREDS["AWS_SECRET_ACCESS_KEY"])


def _locks(s3: Any, prefix: str) -> dict[str, dict[str, Any]]:
    """The cells' locks now in the bucket: cell id -> the holder's record (host, pid, ...)."""
    found = {}
    for obj in s3.list_objects_v2(Bucket="cubes", Prefix=f"{prefix}/").get("Contents", []):
        key = obj["Key"]
        if key.endswith(".zarr.lock"):
            try:
                body = s3.get_object(Bucket="cubes", Key=key)["Body"].read()
                found[key.rsplit("/", 1)[1].removesuffix(".zarr.lock")] = json.loads(body)
            except (s3.exceptions.NoSuchKey, ValueError):
                continue  # released (or being written) between the listing and the read
    return found


def _writing(c: Cluster, s3: Any, prefix: str, spare: set[str], client: Pod, timeout: float = 300.0,
             ) -> tuple[Pod, str]:
    """A live worker pod not in ``spare`` that holds a cell's lock now (it is in the middle of that cell)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and client.alive():
        for cell, doc in _locks(s3, prefix).items():
            pod = c.holder(doc)
            if pod is not None and pod.alive() and pod.name not in spare:
                return pod, cell
        time.sleep(0.1)
    raise AssertionError(f"no worker outside {sorted(spare)} was seen writing a cell (client "
                         f"{'running' if client.alive() else 'ended'}):\n{client.tail()}\n{c.logs()}")


#: a lock written or removed, in moto's access log: client address, time, method, key (a PUT cut short by a kill is
#: answered 400 and writes nothing)
_ACCESS = re.compile(r'^(\S+) - - \[[^\]]*?(\d\d:\d\d:\d\d)\] "(PUT|DELETE) /cubes/(\S+)\.zarr\.lock \S+" 2\d\d ')


def _stories(c: Cluster, prefix: str, client_log: str) -> dict[str, list[str]]:
    """Each cell's lock as the object store saw it (who wrote it, released it, took it over from whom) and the
    attempts the area's client retried, in order."""
    stories: dict[str, list[str]] = {cell.id: [] for cell in cells_of(AREA, KM)}
    writer: dict[str, str] = {}
    for line in c.store.text().splitlines():
        m = _ACCESS.match(line)
        if not m or not m.group(4).startswith(f"{prefix}/"):
            continue
        addr, when, method, cell = m.group(1), m.group(2), m.group(3), m.group(4).split("/", 1)[1]
        who = c.who(addr)
        if method == "PUT" and writer.get(cell) != who:
            stories[cell].append(f"{when} locked by {who}")
        elif method == "DELETE" and writer.get(cell) == who:
            stories[cell].append(f"{when} released by {who}")
        elif method == "DELETE":
            stories[cell].append(f"{when} {who} took over the lock of {writer.get(cell)}")
        writer[cell] = who if method == "PUT" else ""
    for m in re.finditer(r"cell (\S+) failed \(attempt (\d+) of \d+\), tried again in \d+ s: (\w+)", client_log):
        stories[m.group(1)].append(f"attempt {m.group(2)} failed ({m.group(3)}), tried again")
    return stories


def _drill(c: Cluster, root: Path, prefix: str, *, partition: bool) -> Drill:
    s3 = _s3(c)
    t0 = time.monotonic()
    client = _cli(c, f"s3://cubes/{prefix}", root / f"run-area-{prefix}.log")
    faults = []
    try:
        victim, cell = _writing(c, s3, prefix, set(), client)
        victim.kill()
        faults.append(f"{victim.name} SIGKILLed (the pod: Nanny and worker) while writing cell {cell}, "
                      f"{time.monotonic() - t0:.1f} s into the run")
        if partition:
            cut, cell = _writing(c, s3, prefix, {victim.name}, client)
            what = c.net.cut(cut)
            faults.append(f"{cut.name} partitioned ({what}) while writing cell {cell}, "
                          f"{time.monotonic() - t0:.1f} s into the run")
            time.sleep(PARTITION_S)
            c.net.mend(cut)
            faults.append(f"{cut.name} reconnected after {PARTITION_S:.0f} s")
        client.proc.wait(timeout=600)  # type: ignore[union-attr]
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the area run did not end:\n{client.tail()}\n{c.logs()}") from None
    finally:
        client.stop()
    seconds = time.monotonic() - t0
    body = s3.get_object(Bucket="cubes", Key=f"{prefix}/{SUMMARY}")["Body"].read()
    log = client.text()
    return Drill(json.loads(body), faults, _stories(c, prefix, log), log, seconds)


def _metadata(raw: bytes) -> dict[str, Any]:
    doc = json.loads(raw)
    attrs = doc.get("attributes")
    if isinstance(attrs, dict):
        doc["attributes"] = {k: v for k, v in attrs.items() if k not in VARY}
    return doc


def _same_cells(c: Cluster, prefix: str, reference: Path) -> int:
    """Every cell's cube in the bucket is complete, unlocked and the reference's: the same objects, every stored
    chunk byte for byte, every metadata document (``zarr.json``) equal but :data:`VARY`. Returns the objects
    compared."""
    s3 = _s3(c)
    so = {"key": S3_CREDS["AWS_ACCESS_KEY_ID"], "secret": S3_CREDS["AWS_SECRET_ACCESS_KEY"],
          "client_kwargs": {"endpoint_url": c.s3_local, "region_name": S3_CREDS["AWS_REGION"]}}
    compared = 0
    for cell in cells_of(AREA, KM):
        assert CubeStore(cell_url(f"s3://cubes/{prefix}", cell), so).status() == "complete", cell.id
        ref = reference / f"{cell.id}.zarr"
        want = {str(p.relative_to(ref)): p for p in ref.rglob("*") if p.is_file()}
        got = {}
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket="cubes", Prefix=f"{prefix}/{cell.id}.zarr/")
        for page in pages:
            for obj in page.get("Contents", []):
                got[obj["Key"].removeprefix(f"{prefix}/{cell.id}.zarr/")] = obj["Key"]
        assert sorted(got) == sorted(want), f"{cell.id}: the objects differ"
        for rel, key in got.items():
            a, b = s3.get_object(Bucket="cubes", Key=key)["Body"].read(), want[rel].read_bytes()
            if rel.endswith("zarr.json"):
                assert _metadata(a) == _metadata(b), f"{cell.id}/{rel}"
            else:
                assert a == b, f"{cell.id}/{rel}: the stored bytes differ"
            compared += 1
    left = [o["Key"] for o in s3.list_objects_v2(Bucket="cubes", Prefix=f"{prefix}/").get("Contents", [])
            if o["Key"].endswith(".lock")]
    assert not left, f"locks left behind: {left}"
    return compared


@pytest.fixture(scope="module")
def isolated() -> bool:
    return netns_unavailable() is None


@pytest.fixture(scope="module")
def reference(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same area in one process (threads), on a local disk."""
    out = tmp_path_factory.mktemp("reference") / "one-process"
    summary = run_area(AREA, DATES, cell_km=KM, out=str(out), max_cells=1, **RUN)
    assert summary.ok and summary.counts["done"] == 6, summary.to_json()
    return out


@contextlib.contextmanager
def _pods(sample_dir: Path, root: Path, isolated: bool, hostnames: bool) -> Iterator[Cluster]:
    with cluster(root, workers=3, nthreads=2, isolated=isolated, hostnames=hostnames,
                 env={"SRCUBE_SAMPLE_DIR": str(sample_dir), "DO_NOT_TRACK": "1"}) as c:
        yield c


def _check(c: Cluster, drill: Drill, reference: Path, prefix: str) -> None:
    s = drill.summary
    failure = f"{drill.report()}\n{drill.client_log[-4000:]}\n{c.logs()}"
    assert s["cells"] == 6 and s["failed"] == 0 and not s["interrupted"], failure
    assert s["done"] + s["skipped"] == 6 and s["empty"] == 0, failure
    assert _same_cells(c, prefix, reference) > 6 * 10
    victim = next(p for p in c.workers if not p.alive())
    if c.net.isolated:  # the store saw who wrote: the killed pod's lock was taken over by another pod
        taken = [line for story in drill.cells.values() for line in story if f"lock of {victim.name}" in line]
        assert taken, failure
    print(f"\ndrill ({'network namespaces' if c.net.isolated else 'loopback'}, "
          f"{'own hostnames' if c.workers[0].hostname else 'one hostname'}): {drill.seconds:.1f} s",
          drill.report(), sep="\n")


def test_a_cell_waits_for_the_lock_of_a_writer_that_died_on_another_machine(sample_dir, tmp_path, monkeypatch):
    """What the drill's killed pod leaves on a real cluster: its cell's lock, held by a host the cell's next attempt
    cannot ask about, stale only when its heartbeat is ``stale_after`` (120 s) old. The attempt waits for that and
    takes the lock over, instead of failing at once and being recorded failed after its back-off."""
    small = (4.47, 51.405, 4.4775, 51.408)  # 2 cells
    cell = cells_of(small, KM)[0].id
    out = tmp_path / "area"
    out.mkdir()
    now = time.time()  # the last heartbeat 115 s ago: stale in 5 s
    (out / f"{cell}.zarr.lock").write_text(json.dumps({"host": "a-pod-that-is-gone", "pid": 7, "token": "dead",
                                                        "started": now - 600, "heartbeat": now - 115}))
    monkeypatch.setattr(area_mod, "RETRY_S", 0.05)  # retries alone would come and go within the 5 s
    results = {}
    # one cell at a time: no other cell's thread is inside a catch_warnings block (they are process-wide, not
    # thread-safe) while the locked cell's first attempt waits and warns
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", StaleLockWarning)  # recorded, and checked below; others as configured
        summary = run_area(small, "2024-06-12", cell_km=KM, out=str(out), max_cells=1,
                           on_cell=lambda r, _: results.update({r.cell: r}), **RUN)
    assert summary.ok and summary.counts["done"] == 2, summary.to_json()
    assert results[cell].state == "done" and results[cell].attempts == 1  # it waited, it did not fail
    assert any(issubclass(w.category, StaleLockWarning) and "a-pod-that-is-gone" in str(w.message)
               and "heartbeat" in str(w.message) for w in seen), [str(w.message) for w in seen]
    assert not (out / f"{cell}.zarr.lock").exists()


@pytest.mark.slow  # ~80 s of pods; in the default run test_reliability kills a worker mid-run (same bytes) and
# test_area retries a failing cell and records it, and test_a_cell_waits_for_the_lock_... covers a dead writer's lock
@pytest.mark.timeout(900)
def test_a_killed_worker_loses_no_cell(sample_dir, reference, isolated, tmp_path):
    """A worker pod SIGKILLed while it writes a cell: the cell runs again elsewhere (the dead writer's lock taken
    over at once: its process on this machine is gone) and every cell ends complete and as in one process."""
    with _pods(sample_dir, tmp_path / "pods", isolated, hostnames=False) as c:
        drill = _drill(c, tmp_path, "kill", partition=False)
        _check(c, drill, reference, "kill")


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_killed_and_a_partitioned_worker_lose_no_cell(sample_dir, reference, isolated, tmp_path):
    """The drill of issue 23: a worker pod SIGKILLed and another cut off for 20 s, both while writing cells, on
    pods with hostnames of their own (the killed pod's lock goes stale by its heartbeat only)."""
    # hostnames of their own where namespaces are allowed (unshare --uts needs root too)
    with _pods(sample_dir, tmp_path / "pods", isolated, hostnames=isolated) as c:
        drill = _drill(c, tmp_path, "drill", partition=True)
        _check(c, drill, reference, "drill")
