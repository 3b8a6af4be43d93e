"""The client of a run given none: dask's threaded scheduler in this process, behind the Client methods a
run uses; worker processes only when asked for."""

from __future__ import annotations

import dask.array as da
import numpy as np

from srcube.pipeline.cluster import LocalThreads, compute, dask_client, gpu_resources, usable_cores
from srcube.pipeline.sr.engine import host_threads


def test_no_client_means_threads_here():
    with dask_client() as client, dask_client(n_workers=1) as one:
        assert isinstance(client, LocalThreads) and isinstance(one, LocalThreads)
        assert client.nthreads() == {client.address: usable_cores()}
        assert client.run(lambda: 41 + 1) == {client.address: 42}
        assert gpu_resources(client, None) is None  # nothing declares a GPU here
        assert host_threads(client) == (("local", 1),)  # one torch thread per Dask thread


def test_compute_gives_what_dask_would(capsys):
    x = da.arange(100, chunks=7)
    client = LocalThreads(2)
    a, b = compute(client, [x * 2, (x + 1).sum()], False, "both")
    np.testing.assert_array_equal(a, np.arange(100) * 2)
    assert b == 5050
    assert compute(client, x[:3], True, "with a progress bar").tolist() == [0, 1, 2]
    assert "with a progress bar" in capsys.readouterr().out


def test_register_plugin_installs_here():
    seen = []

    class Plugin:
        def setup(self, worker=None):
            seen.append(worker)

    LocalThreads().register_plugin(Plugin(), name="p")
    assert seen == [None]



def test_a_scheduler_address_is_a_client_for_the_run(dask_client, sample_url, tmp_path):
    """``client="tcp://..."`` (what ``srcube run --scheduler`` passes) connects to that scheduler for the run; the
    run's tasks go to it, and the run's connection is closed afterwards."""
    import time

    from srcube.pipeline import run_region

    def transitions(dask_scheduler):
        return dask_scheduler.transition_counter

    def clients(dask_scheduler):
        return len(dask_scheduler.clients)

    before, connected = dask_client.run_on_scheduler(transitions), dask_client.run_on_scheduler(clients)
    cube = run_region((4.465, 51.401, 4.487, 51.414), "2024-05-01/2024-06-30", model="bicubic", bands=["B04"],
                      out=str(tmp_path / "cube.zarr"), client=dask_client.scheduler.address)
    assert cube.attrs["complete"] is True
    assert dask_client.run_on_scheduler(transitions) > before + 10
    deadline = time.monotonic() + 30
    while dask_client.run_on_scheduler(clients) > connected and time.monotonic() < deadline:
        time.sleep(0.1)
    assert dask_client.run_on_scheduler(clients) == connected
