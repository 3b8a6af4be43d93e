"""A retried flow run on another machine skips the write batches that finished: task results and cache
records live in shared object storage (SRCUBE_RESULT_STORAGE), not on the pod that ran them.

Two separate processes, as two flow-run pods would be: each with its own PREFECT_HOME (so its own local
result storage) and its own Dask cluster, talking to one Prefect server, and sharing nothing else but an
S3-compatible object store (moto's server). The first runs the flow and fails in one batch (the failure
drill); the second runs it again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.helpers import REPO, S3_CREDS

pytestmark = pytest.mark.integration
BBOX = [4.465, 51.401, 4.487, 51.414]
DATES = "2024-06-12/2024-06-22"  # two clear days

RUN = """
import json, sys
from srcube.flows.region import region_flow
state = region_flow(bbox={bbox}, dates={dates!r}, out={out!r}, model="bicubic", batch_chunks=1, return_state=True)
print("RESULT " + json.dumps({{"failed": state.is_failed(),
                              "result": state.result() if state.is_completed() else None}}))
"""


def _flow_process(home: Path, env: dict[str, str], out: str, fail: int | None) -> dict:
    from srcube.flows.region import FAIL_AT_BATCH_ENV

    code = RUN.format(bbox=BBOX, dates=DATES, out=out)
    env = {**env, "PREFECT_HOME": str(home)}
    env.pop(FAIL_AT_BATCH_ENV, None)
    if fail is not None:  # the failure drill (test-only): that batch writes half of its chunks and fails
        env[FAIL_AT_BATCH_ENV] = str(fail)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=280)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"rc {proc.returncode}: {proc.stderr[-4000:]}"
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.slow  # two flow processes, each with its own Dask cluster (~75 s); -m slow runs it
@pytest.mark.timeout(600)
def test_retry_in_another_process_skips_finished_batches(prefect_api, s3_endpoint, sample_dir, tmp_path):
    import fsspec
    import s3fs

    from srcube.pipeline.write.store import CubeStore

    env = {**os.environ, **S3_CREDS, "AWS_ENDPOINT_URL": s3_endpoint, "SRCUBE_SAMPLE_DIR": str(sample_dir),
           "SRCUBE_RESULT_STORAGE": "s3://results/prefect", "SRCUBE_DASK_WORKERS": "1",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "PREFECT_LOGGING_LEVEL": "WARNING",
           "PREFECT_API_URL": prefect_api, "PYTHONPATH": str(REPO)}
    out = "s3://cubes/two-processes.zarr"
    first = _flow_process(tmp_path / "home-a", env, out, fail=1)
    assert first["failed"]
    opts = {"key": S3_CREDS["AWS_ACCESS_KEY_ID"], "secret": S3_CREDS["AWS_SECRET_ACCESS_KEY"],
            "client_kwargs": {"endpoint_url": s3_endpoint, "region_name": S3_CREDS["AWS_REGION"]}}
    store = CubeStore(out, opts)
    assert store.status() == "incomplete"
    total = sum(store.expected().values())
    done_before = sum(len(store.done(name)) for name in store.expected())
    assert 0 < done_before < total
    fs = s3fs.S3FileSystem(**opts)
    records = fs.find("results/prefect")
    assert records  # the finished batches' results and cache records are in the object store

    second = _flow_process(tmp_path / "home-b", env, out, fail=None)  # another process, other local storage
    assert not second["failed"], second
    result = second["result"]
    assert result["cached_batches"] > 0  # finished batches came from the shared cache
    assert result["chunk_writes"] == total - done_before  # and nothing they wrote was computed again
    assert store.status() == "complete"
    # neither process kept a write-batch result of its own: they are all in the object store
    assert not [p for p in tmp_path.rglob("storage/*") if p.is_file() and b"written" in p.read_bytes()]
    fsspec.config.conf.pop("s3", None)
