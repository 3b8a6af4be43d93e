"""The lazy cube's graph (pipeline.build): the super-resolved frames or windows with their QA layers on the
same tiles, conformed to the schema. Small synthetic stacks; the sample runs end to end in test_region."""

import numpy as np
import pytest
import xarray as xr

from srcube import models
from srcube.models.consistency import Projection
from srcube.pipeline.assemble.clearance import FrameDecision, WindowPlan
from srcube.pipeline.build import multi_frame_cube, single_image_cube
from srcube.pipeline.options import RunOptions
from srcube.pipeline.sr.tiling import TileSpec
from tests.support.helpers import TINY, georef

H, W = 40, 36
TIMES = np.datetime64("2024-06-01", "ns") + np.arange(3) * np.timedelta64(5, "D")


def _stack(bands: int, halo: int = 0, seed: int = 0) -> xr.Dataset:
    """A lazy (time, band, y, x) stack of three dates as ``assemble`` returns it, with a ``clear`` layer, a
    patch without data in one band on the second date and ``halo`` context pixels on each side."""
    rng = np.random.default_rng(seed)
    refl = rng.random((3, bands, H, W), dtype=np.float32)
    refl[1, 0, 10:14, 7:12] = np.nan
    clear = rng.random((3, H, W)) > 0.3
    arr = georef(refl).assign_coords(time=TIMES)
    ds = xr.Dataset({"reflectance": arr, "clear": (("time", "y", "x"), clear)})
    ds = ds.assign_coords(items=("time", [f"item-{i}" for i in range(3)]))
    return ds.chunk({"time": 1, "y": 16, "x": 16}).assign_attrs(halo=halo)


def _up(a: np.ndarray, s: int) -> np.ndarray:
    return a.repeat(s, axis=-2).repeat(s, axis=-1)


def _frames(kept: tuple[bool, ...]) -> list[FrameDecision]:
    return [FrameDecision(str(t)[:10], 0.5 + i / 10, 0.4 + i / 10, k, "test") for i, (t, k) in
            enumerate(zip(TIMES, kept, strict=True))]


@pytest.mark.parametrize("halo", [0, 4])
def test_single_image_cube_has_its_qa_layers_on_the_sr_tiles(halo):
    stack = _stack(bands=2, halo=halo)
    net = models.build("bicubic", scale=2)
    tiles = TileSpec(tile=12, margin=net.receptive_field, scale=2)
    cube = single_image_cube(stack, _frames((True, True, False)), net, tiles, None, RunOptions(), None).compute()
    inner = stack.isel(y=slice(halo, H - halo), x=slice(halo, W - halo))
    assert dict(cube.sizes) == {"time": 2, "band": 2, "y": 2 * (H - 2 * halo), "x": 2 * (W - 2 * halo)}
    # one write task's location holds every layer: the QA layers are cut as the reflectance is
    lazy = single_image_cube(stack, _frames((True, True, False)), net, tiles, None, RunOptions(), None)
    assert lazy.clear.chunks[1:] == lazy.reflectance.chunks[2:] == (lazy.clear_count.chunks[0],
                                                                   lazy.clear_count.chunks[1])
    clear = inner.clear.values[:2]
    has_data = np.isfinite(cube.reflectance.values).all(axis=1)
    assert not has_data[1].all() and has_data[0].all()  # the patch without data in one band
    np.testing.assert_array_equal(cube.clear.values, _up(clear, 2) & has_data)
    np.testing.assert_array_equal(cube.clear_count.values, _up(clear.sum(axis=0), 2))  # the dropped date not
    np.testing.assert_allclose(cube.clear_fraction.values, [0.5, 0.6])
    assert list(cube["items"].values) == ["item-0", "item-1"] and cube["items"].dtype == object
    # conformed to the schema
    assert cube.reflectance.attrs["standard_name"] == "surface_bidirectional_reflectance"
    assert {cube[v].attrs["grid_mapping"] for v in ("reflectance", "clear", "clear_count")} == {"spatial_ref"}
    assert "consistency" not in cube


def test_the_consistency_layer_is_a_variable_of_the_cube():
    stack = _stack(bands=2)
    net = models.build("bicubic", scale=2)
    margin = net.receptive_field + Projection.for_sensor("sentinel-2", 2).margin
    tiles = TileSpec(tile=max(16, margin), margin=margin, scale=2)
    cube = single_image_cube(stack, _frames((True, False, True)), net, tiles, None, RunOptions(), None,
                             consistency=True)
    assert "consistency" in cube.data_vars and "consistency" not in cube.coords
    assert cube.consistency.dims == ("time", "y", "x") and cube.consistency.dtype == np.float32
    assert cube.consistency.chunks == cube.clear.chunks


def test_multi_frame_cube_fuses_the_real_views_of_each_kept_window():
    stack = _stack(bands=1, seed=1)
    net = models.build("highresnet", scale=3, **{**TINY["highresnet"], "n_views": 2}).eval()
    tiles = TileSpec(tile=max(16, net.receptive_field), margin=net.receptive_field, scale=3)
    windows = [WindowPlan("2024-06-01", "2024-06-08", (0, 1), "ok", "two views"),
               WindowPlan("2024-06-08", "2024-06-15", (), "dropped", "no clear view"),
               WindowPlan("2024-06-15", "2024-06-22", (2,), "padded", "one view")]
    cube = multi_frame_cube(stack, windows, 2, net, tiles, None, RunOptions(), None).compute()
    assert list(cube.time.values) == [np.datetime64("2024-06-01", "ns"), np.datetime64("2024-06-15", "ns")]
    assert list(cube.views.values) == [2, 1]
    clear = stack.clear.values
    count = np.stack([clear[0].astype(np.uint8) + clear[1], clear[2].astype(np.uint8)])  # the padding counts none
    np.testing.assert_array_equal(cube.clear_count.values, _up(count, 3))
    has_data = np.isfinite(cube.reflectance.values).all(axis=1)
    np.testing.assert_array_equal(cube.clear.values, (_up(count, 3) > 0) & has_data)
    assert list(cube.window_end.values) == ["2024-06-08", "2024-06-22"]
    np.testing.assert_array_equal(cube.time_bounds.values[1], np.array(["2024-06-15", "2024-06-22"], "datetime64[ns]"))
    assert cube.time.attrs["bounds"] == "time_bounds"
    assert cube.time.attrs["long_name"] == "start of the composite window"
    assert list(cube["items"].values) == ["item-0,item-1", "item-2"]
