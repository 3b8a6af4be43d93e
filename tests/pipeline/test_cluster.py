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
