"""engine="onnx": the default model's exported graph in onnxruntime through the tiled engine, on the sample archive's
pixels, against torch; the cache of exported graphs; a given .onnx file checked against the model; typed errors."""

import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from srcube.pipeline import super_resolve
from srcube.pipeline.errors import (
    IncompatibleWeightsError,
    InvalidDataError,
    InvalidOptionError,
    OnnxExportError,
    OnnxUnavailableError,
)
from tests.support.helpers import georef

pytest.importorskip("onnxruntime", reason="onnx extra not installed")

MODEL = "s2-sisr-x4"  # the default model: lrnet with the consistency projection in its graph


@pytest.fixture(scope="module")
def cache(onnx_cache: Path) -> Path:
    """The session's cache of exported graphs: the model is exported by the first test that needs it (here, or the
    shipped models' parity test in tests/models/test_onnx.py)."""
    return onnx_cache


@pytest.fixture(scope="module")
def sample_pixels(sample_dir: Path) -> xr.DataArray:
    """B04 and B08 of the sample archive's first acquisition, 70 x 83 pixels (not a multiple of any tile), as
    reflectance with one no-data pixel."""
    import rasterio
    from rasterio.windows import Window

    scene = sorted((sample_dir / "cogs").iterdir())[0]
    rows, cols = (101, 171), (57, 140)
    read = []
    for band in ("B04", "B08"):
        with rasterio.open(scene / f"{band}.tif") as src:
            read.append(src.read(1, window=Window(cols[0], rows[0], cols[1] - cols[0], rows[1] - rows[0])))
            t, crs = src.transform, src.crs
    x0, y0 = t.c + cols[0] * t.a, t.f + rows[0] * t.e
    data = georef(np.stack(read)[None].astype(np.float32) * np.float32(1e-4) - np.float32(0.1), res=t.a, x0=x0,
                  y0=y0).isel(time=0).assign_coords(band=["B04", "B08"]).rio.write_crs(crs)
    data.values[1, 33, 40] = np.nan
    return data


def test_onnx_engine_gives_the_torch_result_on_sample_pixels(cache, sample_pixels):
    kw = {"tile": 40}  # 2 x 3 tiles, each borrowing its neighbours' 36-pixel margin
    ref = super_resolve(sample_pixels, MODEL, **kw)
    got = super_resolve(sample_pixels, MODEL, engine="onnx", **kw)
    assert got.shape == ref.shape == (2, 280, 332)
    np.testing.assert_array_equal(np.isnan(got.values), np.isnan(ref.values))  # the no-data pixel, x4 x4
    assert np.isnan(got.values[1, 132:136, 160:164]).all()
    diff = float(np.nanmax(np.abs(got.values - ref.values)))
    assert diff <= 1e-4, diff
    layer = float(np.nanmax(np.abs(got.consistency.values - ref.consistency.values)))
    assert layer <= 1e-4, layer
    assert got.attrs["sr_model"] == ref.attrs["sr_model"] and "consistency" in got.coords


def test_the_graph_is_exported_once_into_the_cache_and_can_be_given(cache, sample_pixels):
    small = sample_pixels.isel(y=slice(0, 30), x=slice(0, 41))
    first = super_resolve(small, MODEL, engine="onnx")
    graphs = sorted(cache.glob(f"{MODEL}-*.onnx"))
    assert len(graphs) == 1 and len(graphs[0].name) == len(MODEL) + 1 + 24 + 5  # named by the model, keyed by hash
    stamp = graphs[0].stat().st_mtime_ns
    again = super_resolve(small, MODEL, engine="onnx")  # from the cache: not exported again
    assert sorted(cache.glob(f"{MODEL}-*.onnx")) == graphs and graphs[0].stat().st_mtime_ns == stamp
    given = super_resolve(small, MODEL, engine="onnx", onnx_path=graphs[0])
    np.testing.assert_array_equal(again.values, first.values)
    np.testing.assert_array_equal(given.values, first.values)
    assert not list(cache.glob("*.part"))  # no half-written file left


def test_worker_processes_run_the_graph_they_are_sent(cache, sample_pixels, dask_client):
    """The graph's bytes travel in the Dask graph (no shared folder): each worker process makes its own session."""
    small = sample_pixels.isel(y=slice(0, 45), x=slice(0, 61))
    here = super_resolve(small, MODEL, engine="onnx", tile=40)
    lazy = super_resolve(small.chunk({"y": 40, "x": 40}), MODEL, engine="onnx", tile=40)
    there = dask_client.compute(lazy).result()
    np.testing.assert_array_equal(there.values, here.values)
    assert len(dask_client.nthreads()) == 2  # two worker processes, each with its own onnxruntime session


@pytest.mark.slow  # ~20 s of two runs; the default run checks the engine against torch on sample pixels and in
# worker processes (test_onnx_engine_gives_the_torch_result_on_sample_pixels, test_worker_processes_run_...)
@pytest.mark.integration
def test_run_region_with_the_onnx_engine(cache, sample_url, tmp_path):
    """engine="onnx" as a run option: the same cube as torch within 1e-4 (the graph from this module's cache), the
    request recorded, and a cube of the other engine not resumed (its request hash differs)."""
    from srcube.pipeline import run_region

    kw = {"model": MODEL, "bands": ["B04", "B08"], "catalog": "sample", "tile": 48}
    ref = run_region((4.48, 51.41, 4.495, 51.42), "2024-06-12", out=str(tmp_path / "torch.zarr"), **kw)
    got = run_region((4.48, 51.41, 4.495, 51.42), "2024-06-12", out=str(tmp_path / "onnx.zarr"), engine="onnx", **kw)
    assert got.reflectance.shape == ref.reflectance.shape and got.attrs["complete"] is True
    assert float(np.nanmax(np.abs(got.reflectance.values - ref.reflectance.values))) <= 1e-4
    assert float(np.nanmax(np.abs(got.consistency.values - ref.consistency.values))) <= 1e-4
    assert '"engine": "onnx"' in got.attrs["request"] and got.attrs["request_hash"] != ref.attrs["request_hash"]


def test_a_graph_of_other_weights_or_not_a_graph_is_refused(cache, sample_pixels, tmp_path):
    from srcube import models
    from srcube.models.onnx import export_onnx

    other = tmp_path / "bicubic.onnx"
    export_onnx(models.load_model("bicubic", scale=4), other, sizes=((1, 16, 16),))
    with pytest.raises(IncompatibleWeightsError, match="bicubic x4"):
        super_resolve(sample_pixels, MODEL, engine="onnx", onnx_path=other)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(OnnxExportError, match="not a readable ONNX model"):
        super_resolve(sample_pixels, MODEL, engine="onnx", onnx_path=junk)
    with pytest.raises(OnnxExportError, match="is not a file"):
        super_resolve(sample_pixels, MODEL, engine="onnx", onnx_path=tmp_path / "missing.onnx")


def test_bad_engine_options_are_refused_before_work(cache, sample_pixels, monkeypatch):
    with pytest.raises(InvalidOptionError, match="engine must be one of 'torch', 'onnx'"):
        super_resolve(sample_pixels, MODEL, engine="tensorrt")
    with pytest.raises(InvalidOptionError, match="precision='fp32'"):
        super_resolve(sample_pixels, MODEL, engine="onnx", precision="bf16")
    with pytest.raises(InvalidOptionError, match="pass engine='onnx'"):
        super_resolve(sample_pixels, MODEL, onnx_path="model.onnx")
    # the projection's banded inverse needs axes of more than 2 x 6 input pixels in the graph
    with pytest.raises(InvalidDataError, match="at least 13 x 13 input pixels"):
        super_resolve(sample_pixels.isel(y=slice(0, 12)), MODEL, engine="onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the onnx extra were not installed
    with pytest.raises(OnnxUnavailableError, match=r"pip install 'srcube\[onnx\]'"):
        super_resolve(sample_pixels, MODEL, engine="onnx")
