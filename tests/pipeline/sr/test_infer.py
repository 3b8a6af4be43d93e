import dask.array as da
import numpy as np
import pytest
import rioxarray  # noqa: F401  (registers .rio)
import torch
import torch.nn.functional as F
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from srcube import models
from srcube.models.consistency import Projection
from srcube.pipeline import super_resolve, super_resolve_views
from srcube.pipeline.errors import InvalidDataError, UnknownModelError, UnsupportedScaleError
from srcube.pipeline.sr.tiling import chunk_sizes
from tests.support.helpers import georef, georef_views


def whole_image(a: np.ndarray, name: str, scale: int) -> np.ndarray:
    m = models.build(name, scale=scale)
    with torch.inference_mode():
        return m(torch.from_numpy(a)).numpy()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    h=st.integers(1, 70), w=st.integers(1, 70), tile=st.integers(16, 40),
    scale=st.sampled_from([2, 3, 4]), name=st.sampled_from(["nearest", "bilinear", "bicubic"]),
    margin=st.integers(0, 6), seed=st.integers(0, 2**16),
)
def test_tiled_equals_whole_image(h, w, tile, scale, name, margin, seed):
    a = np.random.default_rng(seed).random((1, 2, h, w), dtype=np.float32)
    out = super_resolve(georef(a).chunk({"y": 7, "x": 9}), name, scale=scale, tile=tile, margin=margin)
    got = out.compute().values
    np.testing.assert_allclose(got, whole_image(a, name, scale), rtol=0, atol=1e-5)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    h=st.integers(1, 90), w=st.integers(1, 90), extra_tile=st.integers(0, 20), scale=st.sampled_from([2, 3, 4]),
    name=st.sampled_from(["nearest", "bilinear", "bicubic"]), extra_margin=st.integers(0, 3),
    seed=st.integers(0, 2**16), nan=st.booleans(), boundary=st.sampled_from(["none", "reflect"]),
)
def test_tiled_equals_whole_image_with_the_consistency_projection(h, w, extra_tile, scale, name, extra_margin, seed,
                                                                  nan, boundary):
    projection = Projection.for_sensor("sentinel-2", scale)
    m = models.build(name, scale=scale).receptive_field + projection.margin
    a = np.random.default_rng(seed).random((1, 2, h, w), dtype=np.float32)
    if nan:
        a[0, 1, h // 2, w // 3] = np.nan
    out = super_resolve(georef(a).chunk({"y": 7, "x": 9}), name, scale=scale, tile=m + extra_margin + extra_tile,
                        margin=m + extra_margin, consistency=True, boundary=boundary).compute()
    # the reference: the whole (padded) image through the model and the projection, then cropped
    mm = m + extra_margin if boundary == "reflect" else 0
    valid = np.isfinite(a).all(axis=1)
    x = np.pad(np.nan_to_num(a, nan=0.0), ((0, 0), (0, 0), (mm, mm), (mm, mm)), mode="symmetric")
    ok = np.pad(valid, ((0, 0), (mm, mm), (mm, mm)), mode="symmetric")
    xt = torch.from_numpy(x)
    with torch.inference_mode():
        sr, err = projection.project(xt, models.build(name, scale=scale)(xt), torch.from_numpy(ok))
    sr, err = sr.numpy()[..., mm * scale : (mm + h) * scale, mm * scale : (mm + w) * scale], err.numpy()
    err = err[..., mm : mm + h, mm : mm + w].repeat(scale, -2).repeat(scale, -1)
    sr[np.broadcast_to(~valid.repeat(scale, -2).repeat(scale, -1)[:, None], sr.shape)] = np.nan
    np.testing.assert_allclose(out.values, sr, rtol=0, atol=1e-5)
    np.testing.assert_allclose(out.consistency.values, err, rtol=0, atol=1e-6)
    assert np.isnan(out.consistency.values).sum() == (scale * scale if nan else 0)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    h=st.integers(1, 64), w=st.integers(1, 64), n_views=st.integers(1, 5), padded=st.integers(0, 2),
    extra_margin=st.integers(0, 4), extra_tile=st.integers(0, 30), seed=st.integers(0, 2**16), nan=st.booleans(),
)
def test_tiled_fusion_equals_a_whole_image_pass(h, w, n_views, padded, extra_margin, extra_tile, seed, nan):
    """HighRes-net with random weights: tiled fusion (any tile, any margin >= its receptive field, any number
    of real and padding views) equals the model run once on the whole windows."""
    torch.manual_seed(seed)
    net = models.build("highresnet", scale=3).eval()
    rng = np.random.default_rng(seed)
    views = rng.random((2, n_views + padded, 1, h, w), dtype=np.float32)
    masks = rng.random((2, n_views + padded, h, w)) > 0.3
    present = np.zeros((2, n_views + padded), bool)
    present[:, :n_views] = True
    if nan:
        views[1, 0, 0, h // 2, w // 3] = np.nan
    v, m = georef_views(views, masks)
    margin = net.receptive_field + extra_margin
    got = super_resolve_views(v.chunk({"y": 11, "x": 13}), m, present, net, tile=margin + extra_tile,
                              margin=margin).compute().values
    finite = np.isfinite(views)
    with torch.inference_mode():
        whole = net(torch.from_numpy(np.where(finite, views, 0.0)),
                    torch.from_numpy((masks & finite.all(axis=2)).astype(np.float32)),
                    torch.from_numpy(present)).numpy()
    has = (finite.all(axis=2) & present[:, :, None, None]).any(axis=1)
    whole[np.broadcast_to(~has.repeat(3, -2).repeat(3, -1)[:, None], whole.shape)] = np.nan
    np.testing.assert_allclose(got, whole, rtol=0, atol=1e-5)


def test_output_grid_is_aligned_and_keeps_outer_edges():
    a = np.random.default_rng(1).random((2, 3, 13, 17), dtype=np.float32)
    src = georef(a, res=10.0)
    out = super_resolve(src, "bicubic", scale=4, tile=16)
    assert out.shape == (2, 3, 52, 68)
    assert out.rio.resolution() == (2.5, -2.5)
    assert out.rio.crs == src.rio.crs
    assert out.rio.bounds() == pytest.approx(src.rio.bounds())
    # every input pixel covers exactly scale x scale output pixel centres
    xi = np.floor((out.x.values - 600000.0) / 10.0).astype(int)
    assert np.array_equal(np.bincount(xi), np.full(17, 4))
    assert list(out.band.values) == ["B0", "B1", "B2"]
    assert out.attrs["sr_model"] == "bicubic" and out.attrs["sr_scale"] == 4


def test_band_y_x_input_and_eager_result():
    a = np.random.default_rng(2).random((1, 4, 20, 20), dtype=np.float32)
    out = super_resolve(georef(a).isel(time=0), "bilinear", scale=2, tile=16)
    assert out.dims == ("band", "y", "x") and isinstance(out.data, np.ndarray)
    np.testing.assert_allclose(out.values, whole_image(a, "bilinear", 2)[0], atol=1e-6)


def test_lazy_input_gives_lazy_output():
    a = np.random.default_rng(3).random((2, 1, 40, 40), dtype=np.float32)
    out = super_resolve(georef(a).chunk({"y": 20, "x": 20}), "bicubic", scale=2, tile=20)
    assert isinstance(out.data, da.Array)
    assert out.data.chunks[2] == (40, 40)


def test_nan_input_pixels_are_nan_in_output_and_do_not_spread():
    a = np.random.default_rng(4).random((1, 2, 24, 24), dtype=np.float32)
    a[0, :, 5, 7] = np.nan
    out = super_resolve(georef(a), "bicubic", scale=2, tile=16).values
    nan = np.isnan(out[0, 0])
    assert nan.sum() == 4 and nan[10:12, 14:16].all()


def test_model_object_goes_through_a_cluster(dask_client):
    a = np.random.default_rng(5).random((2, 2, 30, 30), dtype=np.float32)
    model = models.build("bicubic", scale=3)
    out = super_resolve(georef(a).chunk({"y": 16, "x": 16}), model, tile=16)
    got = dask_client.compute(out).result().values
    ref = F.interpolate(torch.from_numpy(a), scale_factor=3, mode="bicubic", align_corners=False).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_errors_before_work():
    a = georef(np.zeros((1, 1, 8, 8), np.float32))
    with pytest.raises(UnknownModelError, match=r"known names|known models"):
        super_resolve(a, "nope")
    with pytest.raises(UnsupportedScaleError):
        super_resolve(a, "bicubic", scale=12)
    with pytest.raises(UnsupportedScaleError):
        super_resolve(a, models.build("bicubic", scale=2), scale=4)
    with pytest.raises(InvalidDataError, match="no CRS"):
        super_resolve(xr.DataArray(np.zeros((1, 8, 8)), dims=("band", "y", "x")), "bicubic")
    with pytest.raises(InvalidDataError, match="dims"):
        super_resolve(a.rename(band="channel"), "bicubic")
    one = xr.DataArray(np.zeros((1, 1, 5)), dims=("band", "y", "x"), coords={"x": np.arange(5.0), "y": [0.0]})
    with pytest.raises(InvalidDataError, match="one-pixel axis"):
        super_resolve(one.rio.write_crs("EPSG:32631"), "bicubic")
    with pytest.raises(InvalidDataError, match="DataArray"):
        super_resolve(np.zeros((1, 8, 8)), "bicubic")  # type: ignore[arg-type]


@pytest.mark.parametrize("consistency", [False, True])
def test_halo_is_context_only_and_gives_the_whole_image_result(consistency):
    """An array read with a halo gives, on the region, exactly a whole-image pass over the array cropped to
    it (the edge tiles see their real neighbours); the output grid is the region's."""
    torch.manual_seed(0)
    net = models.build("srcnn", scale=2).eval()
    a = np.random.default_rng(0).random((2, 1, 90, 77), dtype=np.float32)
    whole = super_resolve(georef(a), net, scale=2, tile=32, consistency=consistency)
    halo = net.receptive_field + (Projection.for_sensor("sentinel-2", 2).margin if consistency else 0)  # the margin
    region = super_resolve(georef(a).chunk({"y": 20}), net, scale=2, tile=32, halo=halo, consistency=consistency)
    assert region.shape[-2:] == (2 * (90 - 2 * halo), 2 * (77 - 2 * halo))
    assert region.data.chunks[-2] == tuple(2 * c for c in chunk_sizes(90 - 2 * halo, 32, halo))  # the region's tiles
    h = 2 * halo
    expected = whole.isel(y=slice(h, -h), x=slice(h, -h))
    np.testing.assert_allclose(region.values, expected.values, rtol=0, atol=1e-6)
    assert region.odc.geobox == expected.odc.geobox
    if consistency:
        np.testing.assert_allclose(region.consistency.values, expected.consistency.values, rtol=0, atol=1e-6)
    with pytest.raises(InvalidDataError, match="smaller than the"):
        super_resolve(georef(a), net, scale=2, tile=32, halo=halo - 1, consistency=consistency)
    with pytest.raises(InvalidDataError, match="nothing inside"):
        super_resolve(georef(a), net, scale=2, tile=40, halo=40, consistency=consistency)
