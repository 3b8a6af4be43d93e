"""Distributed inference: GPU-resource placement, scene-edge modes, precision, batching, exactness."""

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from distributed import Client, LocalCluster, get_task_stream

from srcube import models
from srcube.models.consistency import Projection
from srcube.pipeline import run_region, super_resolve
from srcube.pipeline.errors import InvalidOptionError
from srcube.pipeline.sr.engine import InferenceSpec
from tests.support.helpers import TINY, georef, randomize


@pytest.fixture(scope="module")
def gpu_cluster():
    """Two single-threaded workers; only the first declares a GPU resource (there is no GPU)."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        gpu_worker = sorted(client.scheduler_info()["workers"])[0]

        async def declare_gpu(dask_worker):  # must be a coroutine function (see OFFLINE-STACK.md)
            await dask_worker.set_resources(GPU=1)

        client.run(declare_gpu, workers=[gpu_worker])
        yield client, gpu_worker


def _workers_of(stream, prefix):
    def name(key):
        return str(key[0] if isinstance(key, tuple) else key)

    return {t["worker"] for t in stream if name(t["key"]).startswith(prefix)}


def test_sr_tasks_run_only_on_the_gpu_worker(gpu_cluster):
    client, gpu_worker = gpu_cluster
    a = np.random.default_rng(0).random((3, 2, 96, 96), dtype=np.float32)
    out = super_resolve(georef(a).chunk({"time": 1, "y": 32, "x": 32}), "bicubic", scale=2, tile=32,
                        resources={"GPU": 1})
    with get_task_stream(client) as ts:
        got = client.compute(out, optimize_graph=False).result()
    ran = _workers_of(ts.data, "super-resolve")
    assert ran == {gpu_worker} and len([t for t in ts.data if "super-resolve" in str(t["key"])]) == 27
    # the trap it guards against: with graph optimisation the annotation is dropped
    with get_task_stream(client) as ts2:
        client.compute(out).result()
    assert len({t["worker"] for t in ts2.data}) == 2
    ref = F.interpolate(torch.from_numpy(a), scale_factor=2, mode="bicubic", align_corners=False).numpy()
    np.testing.assert_allclose(got.values, ref, atol=1e-5)


@pytest.mark.integration
def test_run_region_sends_sr_to_gpu_workers(gpu_cluster, sample_url, tmp_path):
    client, gpu_worker = gpu_cluster
    with get_task_stream(client) as ts:
        ds = run_region((4.48, 51.41, 4.495, 51.42), "2024-06-12", bands=["B04"], out=str(tmp_path / "g.zarr"),
                        client=client, tile=32, model="bicubic")
    assert ds.attrs["gpu_resources"] is True
    assert _workers_of(ts.data, "super-resolve") == {gpu_worker}
    with pytest.raises(InvalidOptionError, match="no Dask worker declares a GPU"):
        with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0") as lc, Client(lc) as c:
            run_region((4.48, 51.41, 4.495, 51.42), "2024-06-12", out=str(tmp_path / "n.zarr"), client=c, gpu=True)


@pytest.mark.parametrize("consistency", [False, True])
@pytest.mark.parametrize("boundary", ["reflect", "edge"])
def test_scene_edge_padding_equals_a_padded_whole_image_pass(boundary, consistency):
    model = randomize(models.build("srgan", scale=2, **TINY["srgan"]), std=0.05).eval()
    projection = Projection.for_sensor("sentinel-2", 2) if consistency else None
    m = model.receptive_field + (projection.margin if projection else 0)
    a = np.random.default_rng(1).random((1, 1, 50, 45), dtype=np.float32)
    got = super_resolve(georef(a).chunk({"y": 20, "x": 20}), model, tile=20, boundary=boundary,
                        consistency=consistency).compute().values
    mode = "symmetric" if boundary == "reflect" else "edge"
    padded = torch.from_numpy(np.pad(a, ((0, 0), (0, 0), (m, m), (m, m)), mode=mode))
    with torch.inference_mode():
        whole = model(padded)
        if projection is not None:  # the projection sees the padded scene too (its input is the model's)
            whole = projection.project(padded, whole)[0]
    np.testing.assert_allclose(got, whole.numpy()[..., 2 * m : -2 * m, 2 * m : -2 * m], rtol=0, atol=1e-5)


def test_batched_frames_and_bf16_fidelity():
    model = randomize(models.build("srgan", scale=2, **TINY["srgan"]), std=0.05).eval()
    a = np.random.default_rng(2).random((4, 2, 40, 40), dtype=np.float32) * 0.3
    one = super_resolve(georef(a).chunk({"y": 20, "x": 20}), model, tile=20).compute().values
    four = super_resolve(georef(a).chunk({"y": 20, "x": 20}), model, tile=20, frames_per_task=4)
    assert four.data.chunks[0] == (4,)
    np.testing.assert_allclose(four.compute().values, one, rtol=1e-5, atol=1e-6)
    bf16 = super_resolve(georef(a).chunk({"y": 20, "x": 20}), model, tile=20, precision="bf16").compute().values
    err = np.abs(bf16 - one)
    assert 0 < err.max() < 0.05 * np.abs(one).max()  # bf16 differs, but only in the low bits
    with pytest.raises(ValueError, match="precision"):
        InferenceSpec(2, 2, precision="int8")


def test_torch_threads_share_each_hosts_cores_among_its_dask_threads(gpu_cluster):
    from srcube.pipeline.sr.engine import host_threads, usable_cores

    client, _ = gpu_cluster
    cores = usable_cores()
    assert 1 <= cores <= (os.cpu_count() or 1)
    # two single-threaded worker processes on this host share its cores
    assert host_threads(client) == (("127.0.0.1", max(1, cores // 2)),)
    # each task sets the threads of its worker's host, whatever the spec's fallback says
    spec = InferenceSpec(2, 2, threads=1, per_host=(("127.0.0.1", 3),))
    assert client.submit(spec.threads_here, pure=False).result() == 3
    assert InferenceSpec(2, 2, threads=2).threads_here() == 2  # no per-host table: the fallback


def _count_model_builds():
    import srcube.models.base as mb

    if not hasattr(mb, "_srcube_test_builds"):
        original = mb.ModelSpec.build

        def counted(self):
            mb._srcube_test_builds += 1
            return original(self)

        mb.ModelSpec.build = counted
    mb._srcube_test_builds = 0


def _model_builds():
    import srcube.models.base as mb

    return getattr(mb, "_srcube_test_builds", 0)


def test_the_model_is_built_once_per_worker_not_per_task(gpu_cluster, tmp_path):
    client, _ = gpu_cluster
    net = randomize(models.build("srgan", scale=2, **TINY["srgan"]), std=0.05).eval()
    weights = tmp_path / "once.safetensors"
    models.save_weights(net, weights.with_suffix(""), trained=False)
    client.run(_count_model_builds)
    a = np.random.default_rng(3).random((2, 1, 96, 96), dtype=np.float32)
    out = super_resolve(georef(a).chunk({"y": 32, "x": 32}), str(weights), client=client, tile=32,
                        allow_untrained=True)
    with get_task_stream(client) as ts:
        client.compute(out.data, optimize_graph=False).result()
    tasks = [t for t in ts.data if str(t["key"][0] if isinstance(t["key"], tuple) else t["key"]).startswith(
        "super-resolve")]
    builds = client.run(_model_builds)
    assert len(tasks) >= 9  # 3 x 3 tiles x 2 frames (frames may share a task)
    assert sum(builds.values()) == len({t["worker"] for t in tasks}) and max(builds.values()) == 1
