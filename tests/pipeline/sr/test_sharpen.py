"""Band sharpening: ``pipeline.sharpen`` on arrays, its tiling, its errors, the real T18SVG scene by the
Wald protocol, the ``auto`` rule, and the cube path (``assemble`` / ``run_region`` with 20 m bands)."""

import json

import dask
import dask.array as da
import numpy as np
import pytest
import rasterio
import rioxarray  # noqa: F401  (registers .rio)
import torch
import torch.nn.functional as F
import xarray as xr
from affine import Affine
from rasterio.windows import Window

from srcube import models
from srcube.models.psf import sensor_degradation
from srcube.models.sharpen import S2_GUIDE_BANDS, S2_LOW_BANDS, DSen2Lite
from srcube.pipeline import run_region, sharpen
from srcube.pipeline.assemble.stack import assemble, sharpening_plan
from srcube.pipeline.errors import (
    IncompatibleWeightsError,
    InvalidDataError,
    InvalidOptionError,
    UnknownModelError,
    UntrainedWeightsError,
    WeightsNotFoundError,
)
from srcube.pipeline.params import BBox, DateRange
from srcube.pipeline.search import catalog as cat
from srcube.pipeline.sensors import PROBAV, SENTINEL2
from srcube.pipeline.sr.sharpening import choose_sharpener
from srcube.pipeline.testing import sample
from tests.support.helpers import shared_path

X0, Y0 = 600000.0, 5700000.0


def georef(a: np.ndarray, res: float, names, x0: float = X0, y0: float = Y0, crs: str | None = "EPSG:32631",
           times: bool = True) -> xr.DataArray:
    """(time, band, y, x) or (band, y, x) with pixel-centre coordinates, a CRS and a transform."""
    h, w = a.shape[-2:]
    coords = {"band": list(names), "x": x0 + res * (np.arange(w) + 0.5), "y": y0 - res * (np.arange(h) + 0.5)}
    dims = ("band", "y", "x")
    if a.ndim == 4:
        dims = ("time", *dims)
        if times:
            coords["time"] = np.arange(a.shape[0])
    out = xr.DataArray(a, dims=dims, coords=coords)
    return out.rio.write_crs(crs).rio.write_transform(Affine(res, 0, x0, 0, -res, y0)) if crs else out


def pair(t: int = 2, h: int = 20, w: int = 18, seed: int = 0) -> tuple[xr.DataArray, xr.DataArray]:
    """A smooth random scene: guide (t, 4, 2h, 2w) at 10 m, low (t, 6, h, w) at 20 m, correlated with it."""
    rng = np.random.default_rng(seed)
    base = torch.from_numpy(rng.random((t, 4, 2 * h, 2 * w), dtype=np.float32))
    guide = F.avg_pool2d(F.pad(base, (1, 1, 1, 1), mode="replicate"), 3, stride=1).numpy() * 0.4 + 0.05
    mix = rng.random((6, 4), dtype=np.float32) / 4
    fine = np.einsum("lg,tghw->tlhw", mix, guide) + 0.02
    low = fine.reshape(t, 6, h, 2, w, 2).mean(axis=(3, 5)).astype(np.float32)
    return georef(low, 20.0, S2_LOW_BANDS), georef(guide.astype(np.float32), 10.0, S2_GUIDE_BANDS)


def random_dsen2(features: int = 16, blocks: int = 3, seed: int = 0) -> DSen2Lite:
    """A dsen2 with random weights everywhere (models.build zeroes its last layer: it would be bicubic)."""
    net = models.build("dsen2", features=features, blocks=blocks)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return net.eval()  # type: ignore[return-value]


def whole_image(net: torch.nn.Module, low: xr.DataArray, guide: xr.DataArray) -> np.ndarray:
    with torch.inference_mode():
        return net(torch.from_numpy(low.values), torch.from_numpy(guide.values)).numpy()


# --- the API on arrays -------------------------------------------------------------------------


def test_output_is_on_the_guide_grid():
    low, guide = pair()
    out = sharpen(low, guide, "hpf", tile=16)
    assert out.dims == ("time", "band", "y", "x") and out.shape == (2, 6, 40, 36)
    assert isinstance(out.data, np.ndarray) and out.dtype == np.float32
    assert out.rio.crs == guide.rio.crs and out.odc.geobox == guide.odc.geobox
    np.testing.assert_array_equal(out.x.values, guide.x.values)
    np.testing.assert_array_equal(out.y.values, guide.y.values)
    assert list(out.band.values) == list(S2_LOW_BANDS) and list(out.time.values) == [0, 1]
    assert out.attrs["sharpen_model"] == "hpf" and out.attrs["sharpen_ratio"] == 2
    # each low pixel is exactly 2 x 2 output pixels
    col = np.floor((out.x.values - X0) / 20.0).astype(int)
    assert np.array_equal(np.bincount(col), np.full(18, 2))
    # hpf: the guide's detail is in the result (not bicubic) and the coarse content is the low bands'
    bic = F.interpolate(torch.from_numpy(low.values), scale_factor=2, mode="bicubic", align_corners=False).numpy()
    assert np.abs(out.values - bic).max() > 1e-3
    blocks = out.values.reshape(2, 6, 20, 2, 18, 2).mean(axis=(3, 5))
    assert np.abs(blocks - low.values)[..., 2:-2, 2:-2].mean() < 0.04 * np.abs(low.values).mean()


def test_band_y_x_input_and_the_time_axis():
    low, guide = pair(t=3)
    both = sharpen(low, guide, "hpf", tile=16)
    for t in range(3):
        one = sharpen(low.isel(time=t), guide.isel(time=t), "hpf", tile=16)
        assert one.dims == ("band", "y", "x")
        np.testing.assert_allclose(one.values, both.isel(time=t).values, atol=1e-6)  # frames are independent


def test_lazy_in_lazy_out():
    low, guide = pair()
    eager = sharpen(low, guide, "hpf", tile=10)
    out = sharpen(low.chunk({"y": 7}), guide, "hpf", tile=10)
    assert isinstance(out.data, da.Array)
    assert out.data.chunks[2] == (20, 20) and out.data.chunks[3] == (18, 18)  # 2 x the low tiles (balanced)
    assert out.odc.geobox == guide.odc.geobox
    np.testing.assert_allclose(out.compute().values, eager.values, atol=1e-6)
    assert isinstance(sharpen(low, guide.chunk(), "hpf").data, da.Array)


@pytest.mark.parametrize("tile", [8, 11, 16, 40])
def test_tiled_equals_whole_image_for_a_random_dsen2(tile):
    low, guide = pair(t=2, h=33, w=27, seed=tile)
    net = random_dsen2()
    assert net.receptive_field == 8
    whole = whole_image(net, low, guide)
    bic = F.interpolate(torch.from_numpy(low.values), scale_factor=2, mode="bicubic", align_corners=False).numpy()
    assert np.abs(whole - bic).max() > 1e-2  # the random network adds detail of its own
    got = sharpen(low.chunk({"y": 9, "x": 13}), guide, net, tile=tile).compute().values
    np.testing.assert_allclose(got, whole, rtol=0, atol=1e-5)
    if tile == 40:  # the task's tile cut into forward passes of 16 low pixels, three per pass
        passes = sharpen(low, guide, net, tile=tile, pass_tile=16, batch=3).values
        np.testing.assert_allclose(passes, whole, rtol=0, atol=1e-5)


def test_tiling_that_ignores_the_receptive_field_would_show():
    """The exactness test can fail: a model that declares too small a receptive field gets seams."""
    low, guide = pair(t=1, h=33, w=27)
    net = random_dsen2()

    class Short(DSen2Lite):
        @property
        def receptive_field(self) -> int:
            return 1

    short = Short(features=16, blocks=3)
    short.load_state_dict(net.state_dict())
    short.eval()
    got = sharpen(low, guide, short, tile=8).values
    assert np.abs(got - whole_image(net, low, guide)).max() > 1e-3


def test_weights_file_untrained_needs_allow_untrained(tmp_path):
    low, guide = pair(t=1, h=24, w=20)
    net = random_dsen2(seed=3)
    models.save_weights(net, tmp_path / "sharp", trained=False, training={"data": "none: random"})
    path = str(tmp_path / "sharp.safetensors")
    with pytest.raises(UntrainedWeightsError, match="allow_untrained"):
        sharpen(low, guide, path)
    out = sharpen(low, guide, path, allow_untrained=True, tile=12)
    np.testing.assert_allclose(out.values, whole_image(net, low, guide), atol=1e-5)
    assert out.attrs["sharpen_model"] == "dsen2"
    assert out.attrs["sharpen_weights_sha256"] == models.weights.sha256_file(tmp_path / "sharp.safetensors")


def test_weights_with_a_normalisation_normalise_the_guide_too(tmp_path):
    low, guide = pair(t=1, h=12, w=12)
    net = random_dsen2(seed=4)
    models.save_weights(net, tmp_path / "n", trained=True, normalisation=models.Normalisation(0.1, 0.2))
    loaded = models.load_model(str(tmp_path / "n.safetensors"))
    x, g = torch.from_numpy(low.values), torch.from_numpy(guide.values)
    with torch.inference_mode():
        want = net((x - 0.1) / 0.2, (g - 0.1) / 0.2) * 0.2 + 0.1
        np.testing.assert_allclose(loaded(x, g).numpy(), want.numpy(), atol=1e-5)


@pytest.mark.parametrize("model", ["hpf", "dsen2-object"])
def test_nan_is_no_data_and_does_not_spread(model):
    low, guide = pair(t=1, h=24, w=24)
    low.values[0, 2, 5, 7] = np.nan  # one band of one low pixel: its 2 x 2 output pixels, every band
    guide.values[0, 1, 30, 31] = np.nan  # one guide pixel: that output pixel
    ref = random_dsen2() if model == "dsen2-object" else "hpf"
    out = sharpen(low, guide, ref, tile=12).values
    nan = np.isnan(out)
    assert nan.all(axis=1).sum() == nan.any(axis=1).sum() == 5
    assert nan[0, :, 10:12, 14:16].all() and nan[0, :, 30, 31].all()


def test_hpf_is_fitted_per_tile_so_tiles_differ_slightly_from_one_pass():
    low, guide = pair(t=1, h=40, w=40, seed=7)
    one = sharpen(low, guide, "hpf", tile=40).values
    tiled = sharpen(low, guide, "hpf", tile=10).values
    diff = np.abs(one - tiled)
    assert diff.max() > 1e-6  # not exact: one regression per tile
    assert diff.max() < 0.05 * np.abs(one).mean()


# --- bad input: InvalidDataError before any work ------------------------------------------------


def _poisoned(a: xr.DataArray) -> xr.DataArray:
    """``a`` backed by a Dask graph whose computation fails: an error from it means work was started."""
    def boom(block: np.ndarray) -> np.ndarray:
        raise AssertionError("sharpen computed something before reporting the bad input")

    return a.copy(data=da.from_array(a.values, chunks=-1).map_blocks(boom, dtype=a.dtype))


def _cases() -> dict:
    low, guide = pair(t=1, h=10, w=10)
    shifted = georef(guide.values, 10.0, S2_GUIDE_BANDS, x0=X0 + 10.0)
    return {
        "misaligned": (low, shifted, "hpf", InvalidDataError, r"misaligned.*\+1 guide pixel"),
        "ratio-not-integer": (low, georef(guide.values, 15.0, S2_GUIDE_BANDS), "hpf", InvalidDataError,
                              r"integer multiple"),
        "ratio-not-the-model's": (georef(low.values, 30.0, S2_LOW_BANDS),
                                  georef(np.zeros((1, 4, 30, 30), np.float32), 10.0, S2_GUIDE_BANDS), random_dsen2(),
                                  InvalidDataError, r"sharpens x2"),
        "other-area": (low, guide.isel(x=slice(0, 18)), "hpf", InvalidDataError, r"need exactly 20 x 20"),
        "low-band-count": (low.isel(band=slice(0, 5)), guide, random_dsen2(), InvalidDataError,
                           r"takes 6 low band\(s\).*has 5"),
        "guide-band-count": (low, guide.isel(band=slice(0, 3)), random_dsen2(), InvalidDataError,
                             r"takes 4 guide band\(s\).*has 3"),
        "guide-band-order": (low, guide.isel(band=[1, 0, 2, 3]), random_dsen2(), IncompatibleWeightsError,
                             r"in that order"),
        "low-no-crs": (georef(low.values, 20.0, S2_LOW_BANDS, crs=None), guide, "hpf", InvalidDataError, r"no CRS"),
        "guide-other-crs": (low, georef(guide.values, 10.0, S2_GUIDE_BANDS, crs="EPSG:32632"), "hpf",
                            InvalidDataError, r"one CRS"),
        "time-mismatch": (low, xr.concat([guide, guide], "time"), "hpf", InvalidDataError, r"time step"),
        "time-and-no-time": (low, guide.isel(time=0), "hpf", InvalidDataError, r"both with a time axis"),
        "not-a-sharpener": (low, guide, "bicubic", UnknownModelError, r"not a band sharpener"),
        "learned-without-weights": (low, guide, "dsen2", WeightsNotFoundError, r"no trained weights"),
    }


@pytest.mark.parametrize("name", list(_cases()))
def test_bad_input_is_refused_before_work(name):
    low, guide, model, error, match = _cases()[name]
    if low.rio.crs is not None and guide.rio.crs is not None:
        low, guide = _poisoned(low), _poisoned(guide)
    with pytest.raises(error, match=match):
        sharpen(low, guide, model)


# --- the real scene: Wald protocol on T18SVG -------------------------------------------------------


def _read(folder, band: str, window: Window) -> tuple[np.ndarray, Affine]:
    with rasterio.open(folder / f"{band}.tif") as src:
        return src.read(1, window=window).astype(np.float32) / 1e4, src.window_transform(window)


def test_hpf_beats_bicubic_on_real_20m_bands_by_the_wald_protocol():
    folder = shared_path("sentinel2_l1c_T18SVG_13band")
    # the 10 m window starts 10 m east of the 20 m one (PROVENANCE.md): 20 m column j starts at 10 m column 2j - 1
    i0, j0, n = 300, 301, 192
    low_files = [_read(folder, b, Window(j0, i0, n, n)) for b in S2_LOW_BANDS]
    guide_files = [_read(folder, b, Window(2 * j0 - 1, 2 * i0, 2 * n, 2 * n)) for b in S2_GUIDE_BANDS]
    tr20 = low_files[0][1]
    assert (tr20.c, tr20.f) == (guide_files[0][1].c, guide_files[0][1].f)  # aligned by coordinates
    low20 = np.stack([a for a, _ in low_files])
    guide10 = np.stack([a for a, _ in guide_files])
    # Wald: degrade 20 -> 40 m and 10 -> 20 m with the sensor's PSF, sharpen back, compare with the real 20 m
    degrade = sensor_degradation("sentinel-2")
    low40 = degrade(torch.from_numpy(low20)[None], 2)[0].numpy()
    guide20 = degrade(torch.from_numpy(guide10)[None], 2)[0].numpy()
    out = sharpen(georef(low40, 40.0, S2_LOW_BANDS, tr20.c, tr20.f, "EPSG:32618"),
                  georef(guide20, 20.0, S2_GUIDE_BANDS, tr20.c, tr20.f, "EPSG:32618"), "hpf", tile=48)
    assert out.odc.geobox.affine == Affine(20.0, 0, tr20.c, 0, -20.0, tr20.f)
    bic = F.interpolate(torch.from_numpy(low40)[None], scale_factor=2, mode="bicubic", align_corners=False)[0]

    def psnr(x: np.ndarray, ref: np.ndarray) -> float:  # against the reference's own peak; no border
        x, ref = x[4:-4, 4:-4], ref[4:-4, 4:-4]
        return float(20 * np.log10(ref.max() / np.sqrt(np.mean((x - ref) ** 2))))

    for i, band in enumerate(S2_LOW_BANDS):
        got, base = psnr(out.values[i], low20[i]), psnr(bic.numpy()[i], low20[i])
        assert got > base, f"{band}: hpf {got:.2f} dB, bicubic {base:.2f} dB"


# --- model="auto" ------------------------------------------------------------------------------


def test_auto_is_the_shipped_trained_sharpener_else_hpf(tmp_path, monkeypatch):
    import srcube.models.weights as mw

    monkeypatch.setattr(mw, "SHIPPED_DIR", tmp_path)
    assert models.default_sharpener() == "hpf"
    low, guide = pair(t=1, h=12, w=12)
    assert sharpen(low, guide).attrs["sharpen_model"] == "hpf"
    net = random_dsen2(seed=5)
    models.save_weights(net, tmp_path / "s2-sharpen-x2", trained=False)
    assert models.default_sharpener() == "hpf"  # untrained weights are never picked
    meta = models.save_weights(net, tmp_path / "s2-sharpen-x2", trained=True, training={"sensors": ["sentinel-2"]})
    assert models.default_sharpener() == "hpf"  # trained, but no test report: not a default
    # a sharpener is not a super-resolution model: never the default SR model at x2
    assert models.default_model("sentinel-2", 2) == "bicubic"
    report = tmp_path / "s2-sharpen-x2.test.json"

    def reported(gain_hpf_ci: list[float], sha: str = meta.sha256) -> None:
        report.write_text(json.dumps({"weights_sha256": sha,
                                      "summary": {"baseline": "bicubic", "mean_gain": 6.0, "mean_gain_ci": [5.5, 6.5]},
                                      "summary_hpf": {"baseline": "hpf", "mean_gain": sum(gain_hpf_ci) / 2,
                                                      "mean_gain_ci": gain_hpf_ci}}))

    reported([-0.1, 0.5])  # beats bicubic, but not linear injection beyond doubt: hpf stays the default
    assert "s2-sharpen-x2.test" not in models.shipped_weights()  # a report is not weights
    assert models.default_sharpener() == "hpf"
    reported([0.3, 0.9], sha="0" * 64)  # a report of other weights does not count
    assert models.default_sharpener() == "hpf"
    reported([0.3, 0.9])
    assert models.default_sharpener() == "s2-sharpen-x2"
    out = sharpen(low, guide)
    assert out.attrs["sharpen_model"] == "dsen2"
    assert out.attrs["sharpen_weights_sha256"] == meta.sha256
    np.testing.assert_allclose(out.values, whole_image(net, low, guide), atol=1e-5)
    assert choose_sharpener("auto").method == "dsen2"


def test_choose_sharpener():
    assert choose_sharpener("bilinear").bilinear
    hpf = choose_sharpener("hpf")
    assert hpf.model == "hpf" and hpf.attrs() == {"sharpen": "hpf", "sharpen_model": "hpf", "sharpen_weights": "none",
                                                  "sharpen_weights_sha256": "none"}
    with pytest.raises(InvalidOptionError, match=r"not a band sharpener.*'bilinear', 'dsen2', 'hpf'"):
        choose_sharpener("bicubic")
    with pytest.raises(InvalidOptionError, match=r"unknown model 'pansharp'"):
        choose_sharpener("pansharp")
    with pytest.raises(WeightsNotFoundError):
        choose_sharpener("dsen2")


def test_sharpening_plan():
    guides = ("B02", "B03", "B04", "B08")
    assert sharpening_plan(SENTINEL2, ["B01", "B04", "B8A", "B11"]) == (("B8A", "B11"), guides)  # B01 stays bilinear
    assert sharpening_plan(SENTINEL2, ["B8A", "B11"]) == ((), ())  # a 20 m grid: nothing to sharpen
    assert sharpening_plan(SENTINEL2, ["B8A", "B11"], resolution=10) == (("B8A", "B11"), guides)
    assert sharpening_plan(SENTINEL2, ["B04", "B8A"], resolution=20) == ((), ())
    assert sharpening_plan(SENTINEL2, ["B04", "B8A"], sharpen="bilinear") == ((), ())
    assert sharpening_plan(PROBAV, ["RED", "NIR"]) == ((), ())


# --- the cube path -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def june_items(sample_url):
    client = cat.open_catalog(cat.resolve_catalog("sample"))
    return cat.search(client, "sentinel-2-l2a", BBox(*sample.DEFAULT_BBOX), DateRange.parse("2024-06-12"))


def test_sample_has_20m_bands_that_follow_the_10m_ones(june_items):
    item = june_items[0]
    for band in sample.BANDS_20M:
        asset = item.assets[band].to_dict()
        assert asset["proj:shape"] == [256, 256] and asset["proj:transform"][0] == 20
        assert asset["raster:bands"][0]["scale"] == 0.0001 and asset["raster:bands"][0]["offset"] == -0.1
    read = {}
    for band in ("B04", "B08", "B8A", "B11", "B05"):
        with rasterio.open(item.assets[band].href) as src:
            assert src.transform.c == sample.TILES[item.properties["s2:mgrs_tile"]][0]
            read[band] = src.read(1).astype(np.float32) * 1e-4 - 0.1
    b08 = read["B08"].reshape(256, 2, 256, 2).mean(axis=(1, 3))
    b04 = read["B04"].reshape(256, 2, 256, 2).mean(axis=(1, 3))
    assert np.corrcoef(b08.ravel(), read["B8A"].ravel())[0, 1] > 0.9  # NIR and narrow NIR
    assert np.corrcoef(b04.ravel(), read["B05"].ravel())[0, 1] > 0.5  # red and red edge 1
    assert 0.1 < float(np.median(read["B11"])) < 0.4


def _block_error(sharp: np.ndarray, native: np.ndarray, r: int, c: int) -> float:
    """Mean |2 x 2 block mean of ``sharp`` - the native 20 m pixel| with the native grid at (row r, col c)."""
    h, w = sharp.shape[0] // 2, sharp.shape[1] // 2
    blocks = sharp[: 2 * h, : 2 * w].reshape(h, 2, w, 2).mean(axis=(1, 3))
    return float(np.nanmean(np.abs(blocks[1:-1, 1:-1] - native[r + 1 : r + h - 1, c + 1 : c + w - 1])))


def test_stack_sharpens_20m_bands_on_aligned_grids(june_items):
    bbox = BBox(*sample.DEFAULT_BBOX)
    stack = assemble(june_items, bbox, ["B04", "B8A", "B11"], chunk=128, sharpen="hpf")
    assert list(stack.band.values) == ["B04", "B8A", "B11"] and stack.attrs["resolution"] == 10.0
    assert json.loads(stack.attrs["sharpened_bands"]) == ["B8A", "B11"]
    assert json.loads(stack.attrs["interpolated_bands"]) == [] and stack.attrs["sharpen_model"] == "hpf"
    assert stack.reflectance.data.chunks[2][0] == 128
    # the grid's origin is a pixel edge of the tiles' 20 m grid (tile corners: multiples of 20 m from 600000)
    x_edge, y_edge = float(stack.x[0]) - 5.0, float(stack.y[0]) + 5.0
    assert (x_edge - 600000.0) % 20 == 0 and (5700000.0 - y_edge) % 20 == 0
    assert stack.sizes["y"] % 2 == 0 and stack.sizes["x"] % 2 == 0
    values = stack.reflectance.isel(time=0).compute().values
    assert not np.isnan(values).any()
    item = next(i for i in june_items if i.id == str(stack["items"].values[0]).split(",")[0])
    with rasterio.open(item.assets["B04"].href) as src:  # the 10 m band is copied pixel for pixel
        col, row = int((x_edge - src.transform.c) / 10), int((src.transform.f - y_edge) / 10)
        np.testing.assert_array_equal(values[0, :40, :40],
                                      src.read(1)[row : row + 40, col : col + 40] * np.float32(1e-4) + np.float32(-0.1))
    for i, band in ((1, "B8A"), (2, "B11")):
        with rasterio.open(item.assets[band].href) as src:
            native = src.read(1).astype(np.float32) * np.float32(1e-4) - np.float32(0.1)
            c, r = int((x_edge - src.transform.c) / 20), int((src.transform.f - y_edge) / 20)
        # each 2 x 2 block of the sharpened band is close to the native 20 m pixel under it (hpf keeps the
        # coarse content), and much closer than to the 20 m pixels next to it: the grids are aligned
        aligned = _block_error(values[i], native, r, c)
        shifted = [_block_error(values[i], native, r + dy, c + dx) for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0))]
        assert aligned < 0.03 * float(native.mean()), (band, aligned)
        assert aligned < 0.6 * min(shifted), (band, aligned, shifted)


def test_bilinear_keeps_the_plain_grid(june_items):
    bbox = BBox(*sample.DEFAULT_BBOX)
    plain = assemble(june_items, bbox, ["B04", "B8A"], chunk=128, sharpen="bilinear")
    ten = assemble(june_items, bbox, ["B04"], chunk=128)
    assert (plain.sizes["y"], plain.sizes["x"]) == (ten.sizes["y"], ten.sizes["x"])
    assert float(plain.x[0]) == float(ten.x[0]) and float(plain.y[0]) == float(ten.y[0])
    assert json.loads(plain.attrs["sharpened_bands"]) == [] and json.loads(plain.attrs["interpolated_bands"]) == ["B8A"]


@pytest.mark.integration
def test_run_region_sharpens_20m_bands_into_the_cube(sample_url, dask_client, tmp_path):
    kw = {"bands": ["B04", "B8A", "B11"], "model": "bicubic", "scale": 2, "client": dask_client, "tile": 128}
    auto = run_region(sample.DEFAULT_BBOX, "2024-06-12", out=str(tmp_path / "auto.zarr"), **kw)
    plain = run_region(sample.DEFAULT_BBOX, "2024-06-12", out=str(tmp_path / "plain.zarr"), sharpen="bilinear", **kw)
    a, p = auto.attrs, plain.attrs
    assert list(auto.band.values) == ["B04", "B8A", "B11"] and a["input_resolution"] == 10.0
    assert a["resolution"] == 5.0 and a["model"] == "bicubic"
    expected = models.default_sharpener(kw["bands"])  # learned weights only for exactly their six bands
    assert expected == "hpf" or models.load_model(expected).bands == ["B8A", "B11"]
    assert a["sharpen"] == "auto" and a["sharpen_model"] == ("hpf" if expected == "hpf" else "dsen2")
    assert json.loads(a["sharpened_bands"]) == ["B8A", "B11"] and json.loads(a["interpolated_bands"]) == []
    assert p["sharpen"] == "bilinear" and p["sharpen_model"] == "bilinear" and p["sharpen_weights_sha256"] == "none"
    assert json.loads(p["sharpened_bands"]) == [] and json.loads(p["interpolated_bands"]) == ["B8A", "B11"]
    assert a["request_hash"] != p["request_hash"]
    # on the common extent (the same origin; the sharpened run's grid is snapped outward to 20 m pixel edges, so
    # it may have one more 10 m column and row), away from the right and bottom edges that bicubic sees differently:
    # B04 is the same, B8A and B11 are not (sharpened vs bilinear)
    common = auto.reflectance.isel(time=0).sel(x=plain.x, y=plain.y, method="nearest", tolerance=0.1).values
    other = plain.reflectance.isel(time=0).values
    assert float(auto.x[0]) == float(plain.x[0]) and float(auto.y[0]) == float(plain.y[0])
    np.testing.assert_allclose(common[0, :-4, :-4], other[0, :-4, :-4], atol=1e-6)
    for i in (1, 2):
        assert np.nanmean(np.abs(common[i] - other[i])) > 1e-3
    # the cube is the bicubic x2 of the sharpened stack (assembled as the run does: chunk = tile, with the
    # run's halo), cropped to the bbox
    items = cat.search(cat.open_catalog(cat.resolve_catalog("sample")), "sentinel-2-l2a", BBox(*sample.DEFAULT_BBOX),
                       DateRange.parse("2024-06-12"))
    stack = assemble(items, BBox(*sample.DEFAULT_BBOX), ["B04", "B8A", "B11"], chunk=128,
                     sharpen=choose_sharpener("auto", bands=["B04", "B8A", "B11"]).model, halo=a["halo_pixels"])
    assert stack.attrs["halo"] == a["halo_pixels"] > 0 and a["halo_pixels"] % 2 == 0  # whole 20 m pixels
    with dask.config.set(scheduler="threads"):
        lr = stack.reflectance.isel(time=0).values
    with torch.inference_mode():
        ref = models.build("bicubic", scale=2)(torch.from_numpy(lr[None]))[0].numpy()
    h = 2 * a["halo_pixels"]
    np.testing.assert_allclose(auto.reflectance.isel(time=0).values, ref[:, h:-h, h:-h], atol=1e-5)
