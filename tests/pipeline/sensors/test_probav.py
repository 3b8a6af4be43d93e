"""PROBA-V: the Kelvins reader on real LR frames and on the generated layout; both sensors and
both modes through run_region."""

import datetime as dt
import json

import numpy as np
import pytest
import rioxarray  # noqa: F401
import torch

from srcube import models
from srcube.pipeline import run_region
from srcube.pipeline.errors import InvalidDataError, UnknownBandError
from srcube.pipeline.sensors.probav import LR_DEG, imgset_stack, list_imgsets, read_imgset, read_norm
from srcube.pipeline.testing import sample, sample_probav
from tests.support.helpers import shared_path


@pytest.mark.parametrize(("scene", "frames"), [("scene_a", 9), ("scene_b", 9)])
def test_kelvins_reader_on_real_lr_frames(scene, frames):
    folder = shared_path("probav_kelvins", "lr_only_scenes", scene)
    with pytest.raises(InvalidDataError, match="lacks 9 clear masks"):
        read_imgset(folder)
    imgset = read_imgset(folder, require_qm=False)
    assert imgset.lr.shape == (frames, 128, 128) and imgset.lr.dtype == np.uint16
    assert imgset.qm is None and imgset.hr is None and imgset.band is None
    assert (imgset.lr % 16 == 0).all()  # real frames are quantised in steps of 16
    assert np.allclose(imgset.clearance, 1.0)
    if scene == "scene_a":
        assert imgset.frame_ids == ["000", "001", "002", "003", "004", "006", "007", "008", "009"]
        assert imgset.lr.max() == 26672  # above 16383: do not assume 14-bit
    stack = imgset_stack(imgset, north_west=(4.0, 51.0), start=dt.date(2019, 1, 1))
    assert stack.reflectance.shape == (frames, 1, 128, 128)
    assert float(stack.reflectance.max()) == pytest.approx(imgset.lr.max() / 65535)


def test_real_norm_csv():
    norm = read_norm(shared_path("probav_kelvins", "norm.csv"))
    assert len(norm) == 1450 and norm["imgset0000"] == pytest.approx(52.352172662454414)
    assert 31.4 < min(norm.values()) < 31.5 and 59.7 < max(norm.values()) < 59.8


@pytest.fixture(scope="module")
def kelvins_root(tmp_path_factory):
    return sample_probav.write_kelvins(tmp_path_factory.mktemp("kelvins") / "probav_data")


def test_generated_kelvins_layout(kelvins_root):
    assert (kelvins_root / "norm.csv").exists() and (kelvins_root / "SYNTHETIC.txt").exists()
    train = list_imgsets(kelvins_root, "train")
    test = list_imgsets(kelvins_root, "test", "NIR")
    assert [p.parent.name for p in train] == ["NIR", "NIR", "RED", "RED"]
    assert len(test) == 1
    norm = read_norm(kelvins_root / "norm.csv")
    for path in train:
        im = read_imgset(path)
        assert im.band in ("RED", "NIR") and im.norm == norm[im.name]
        assert im.lr.shape[1:] == (128, 128) and 9 <= im.lr.shape[0] <= 14 and im.lr.dtype == np.uint16
        assert im.qm is not None and im.qm.dtype == bool and im.qm.shape == im.lr.shape
        assert im.hr is not None and im.hr.shape == (384, 384) and im.sm is not None and im.sm.shape == (384, 384)
        assert (im.lr % 16 == 0).all()
        k = im.clearest(5)
        assert list(im.clearance[k]) == sorted(im.clearance, reverse=True)[:5]
    t = read_imgset(test[0])
    assert t.hr is None and t.sm is None  # the test split has no HR, as in the release


def _hrn_weights(tmp_path, n_views=4):
    path = tmp_path / "hrn.safetensors"
    torch.manual_seed(0)
    models.save_weights(models.build("highresnet", scale=3, features=8, n_views=n_views), path, trained=False,
                        training={"data": "none: random initialisation for pipeline tests"})
    return str(path)


@pytest.mark.integration
def test_kelvins_imgset_through_run_region(kelvins_root, tmp_path, dask_client):
    imgset = list_imgsets(kelvins_root, "train", "NIR")[0]
    ds = run_region((4.0, 50.5, 4.5, 51.0), "2019-06-01", catalog=f"kelvins:{imgset}", model=_hrn_weights(tmp_path),
                    scale=3, out=str(tmp_path / "k.zarr"), client=dask_client, allow_untrained=True)
    assert ds.attrs["mode"] == "multi-frame" and ds.attrs["sensor"] == "proba-v"
    assert ds.reflectance.shape == (1, 1, 384, 384) and list(ds.band.values) == ["NIR"]
    assert "nominal" in ds.attrs["georeferencing"] and ds.rio.crs.to_epsg() == 4326
    assert ds.rio.resolution()[0] == pytest.approx(LR_DEG / 3)
    windows = json.loads(ds.attrs["windows"])
    assert len(windows) == 1 and len(windows[0]["views"]) == 4 and int(ds.views[0]) == 4
    assert int(ds.clear_count.max()) <= 4
    with pytest.raises(UnknownBandError, match="one band"):
        run_region((4.0, 50.5, 4.5, 51.0), "2019-06-01", catalog=f"kelvins:{imgset}", bands=["RED", "NIR"],
                   out=str(tmp_path / "never.zarr"))


@pytest.mark.integration
def test_probav_archive_through_run_region_single_image(sample_url, tmp_path, dask_client):
    ds = run_region(sample_probav.DEFAULT_BBOX, "2024-06-01/2024-06-12", collection="proba-v-s1-toc-333m",
                    bands=["RED", "NIR"], scale=3, out=str(tmp_path / "pv.zarr"), client=dask_client, tile=128)
    assert ds.attrs["sensor"] == "proba-v" and ds.attrs["mode"] == "single-image"
    assert ds.rio.crs.to_epsg() == 4326 and ds.attrs["input_resolution"] == pytest.approx(LR_DEG)
    frames = json.loads(ds.attrs["frames"])
    assert len(frames) == 12 and ds.sizes["time"] == sum(f["kept"] for f in frames) == 9
    # the grid is the products' own: pixel edges on multiples of 1/336 degree from 4.0 E
    left = ds.rio.bounds()[0]
    assert abs((left - 4.0) / LR_DEG - round((left - 4.0) / LR_DEG)) < 1e-6
    assert {"clear", "clear_count", "clear_fraction", "clearance_score"} <= set(ds.data_vars)
    assert 0 < int(ds.clear_count.max()) <= 9


@pytest.mark.integration
def test_multi_frame_windows_through_run_region(sample_url, tmp_path, dask_client):
    weights = _hrn_weights(tmp_path)
    ds = run_region(sample_probav.DEFAULT_BBOX, "2024-06-01/2024-06-12", collection="proba-v-s1-toc-333m",
                    bands=["NIR"], model=weights, allow_untrained=True, window="4D", min_views=3,
                    short_windows="drop", out=str(tmp_path / "mf.zarr"), client=dask_client)
    windows = json.loads(ds.attrs["windows"])
    assert len(windows) == 3
    kept = [w for w in windows if w["status"] != "dropped"]
    assert ds.sizes["time"] == len(kept) and list(ds.views.values) == [len(w["views"]) for w in kept]
    assert all(len(w["views"]) >= 3 for w in kept)
    assert [str(t)[:10] for t in ds.time.values] == [w["start"][:10] for w in kept]
    assert ds.reflectance.dims == ("time", "band", "y", "x") and ds.clear_count.dims == ("time", "y", "x")
    # CF time bounds: each window's [start, end), named by the time coordinate
    assert ds.time.attrs["bounds"] == "time_bounds" and ds.time_bounds.dims == ("time", "nv")
    assert [str(b)[:10] for b in ds.time_bounds.values[:, 1]] == [w["end"][:10] for w in kept]
    np.testing.assert_array_equal(ds.time_bounds.values[:, 0], ds.time.values)
    # the views were registered to each window's clearest view first (the default): one shift per view, recorded
    assert ds.attrs["view_registration"] is True
    shifts = np.array(json.loads(ds.reflectance.attrs["view_shifts"]))
    assert shifts.ndim == 3 and shifts.shape[0] == len(kept) and shifts.shape[2] == 2
    assert np.abs(shifts).max() <= 3.0 and all((np.abs(s).sum(1) == 0).any() for s in shifts)  # a reference each
    # the same windows padded instead of dropped: every window with a usable frame stays
    padded = run_region(sample_probav.DEFAULT_BBOX, "2024-06-01/2024-06-12", collection="proba-v-s1-toc-333m",
                        bands=["NIR"], model=weights, allow_untrained=True, window="4D", min_views=4,
                        short_windows="pad", out=str(tmp_path / "mf2.zarr"), client=dask_client)
    statuses = [w["status"] for w in json.loads(padded.attrs["windows"])]
    assert "padded" in statuses and padded.sizes["time"] == sum(s != "dropped" for s in statuses)


@pytest.mark.integration
def test_multi_frame_on_sentinel2(sample_url, tmp_path, dask_client):
    ds = run_region(sample.DEFAULT_BBOX, sample.DEFAULT_DATES, model=_hrn_weights(tmp_path), allow_untrained=True,
                    scale=3, bands=["B04", "B08"], out=str(tmp_path / "s2mf.zarr"), client=dask_client)
    assert ds.sizes["time"] == 1 and ds.attrs["window"] == "all" and int(ds.views[0]) == 4
    # an untrained residual HighRes-net is the bicubic clear-median composite: cloud-free
    assert float(ds.reflectance.sel(band="B04").quantile(0.99)) < 0.2


@pytest.mark.integration
def test_multi_frame_cube_grows_by_whole_windows(sample_url, tmp_path, dask_client):
    """Appending the next windows' dates to a multi-frame cube gives the cube of the whole range (windows aligned
    to the first request's start)."""
    kw = dict(collection="proba-v-s1-toc-333m", bands=["NIR"], model=_hrn_weights(tmp_path), allow_untrained=True,
              window="4D", min_views=3, short_windows="drop", client=dask_client)
    whole = run_region(sample_probav.DEFAULT_BBOX, "2024-06-01/2024-06-12", out=str(tmp_path / "w.zarr"), **kw)
    out = str(tmp_path / "grown.zarr")
    run_region(sample_probav.DEFAULT_BBOX, "2024-06-01/2024-06-08", out=out, mode="append", **kw)
    grown = run_region(sample_probav.DEFAULT_BBOX, "2024-06-09/2024-06-12", out=out, mode="append", **kw)
    np.testing.assert_array_equal(grown.time.values, whole.time.values)
    np.testing.assert_array_equal(grown.time_bounds.values, whole.time_bounds.values)
    np.testing.assert_array_equal(grown.reflectance.values, whole.reflectance.values)
    assert list(grown.views.values) == list(whole.views.values)
    assert len(json.loads(grown.attrs["windows"])) >= len(whole.time)
