"""Consistency by construction: the projection on real Sentinel-2 pixels, tiling, defaults, the cube's QA layer."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from srcube import models
from srcube.models.base import SRModel
from srcube.models.consistency import Projection
from srcube.models.psf import PROJECTION_PSF, decimate, decimate_adjoint, gaussian_blur
from srcube.pipeline import run_region, super_resolve
from srcube.pipeline.assemble.stack import assemble, with_clearance
from srcube.pipeline.errors import InvalidOptionError
from srcube.pipeline.params import BBox, DateRange
from srcube.pipeline.search import catalog as cat
from srcube.pipeline.sensors import SENTINEL2
from tests.support.helpers import TINY, georef, randomize, shared_path

SCALE = 4
TARGET = 5e-4  # the target: mean consistency error in reflectance


class BiasedSharpBicubic(SRModel):
    """A deliberately inconsistent model: bicubic, unsharp-masked, with a 5 % gain and a +0.003 offset."""

    name = "biased-sharp-bicubic"

    def __init__(self, scale: int = SCALE) -> None:
        super().__init__(scale=scale)

    @property
    def receptive_field(self) -> int:
        return 4  # bicubic (2) + the unsharp mask's blur (radius 6 output pixels, < 2 input pixels at x4)

    def sr(self, x: torch.Tensor) -> torch.Tensor:
        b = F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return 1.05 * (b + 1.0 * (b - gaussian_blur(b, 2.0))) + 0.003


@pytest.fixture(scope="module")
def real_hr() -> np.ndarray:
    """A 320 x 320 crop of real Sentinel-2 B04 (10 m, T18SVG L1C), reflectance."""
    rasterio = pytest.importorskip("rasterio")
    with rasterio.open(shared_path("sentinel2_l1c_T18SVG_13band", "B04.tif")) as src:
        dn = src.read(1, window=((700, 1020), (900, 1220)))
    return (dn.astype(np.float32) / 10000.0)[None, None]


@pytest.fixture(scope="module")
def real_lr(real_hr) -> np.ndarray:
    """The crop degraded by the sensor's own degradation (Wald protocol): 80 x 80 input pixels at 40 m."""
    return Projection.for_sensor("sentinel-2", SCALE).degrade(torch.from_numpy(real_hr)).numpy()


def _inconsistent_models() -> dict[str, SRModel]:
    lrnet = randomize(models.build("lrnet", scale=SCALE, features=8, blocks=1), seed=3, std=0.05).eval()
    return {"biased-sharp-bicubic": BiasedSharpBicubic(), "lrnet-random": lrnet}


def _mean_error(lr: np.ndarray, sr: np.ndarray) -> float:
    return float(Projection.for_sensor("sentinel-2", SCALE).error(torch.from_numpy(lr), torch.from_numpy(sr)).mean())


def test_decimate_adjoint_is_the_transpose():
    g = torch.Generator().manual_seed(0)
    for how, phase in (("point", (0.0, 0.0)), ("point", (0.3, -0.25)), ("area", (0.0, 0.0))):
        for s in (2, 3, 4):
            x = torch.randn(2, 13 * s + s - 1, 11 * s + 1, dtype=torch.float64, generator=g)
            y = torch.randn(2, 13, 11, dtype=torch.float64, generator=g)
            lhs = (decimate(x, s, how, phase) * y).sum()
            rhs = (x * decimate_adjoint(y, s, (x.shape[-2], x.shape[-1]), how, phase)).sum()
            assert float(abs(lhs - rhs)) < 1e-10 * float(abs(lhs)), (how, phase, s)


@pytest.mark.parametrize("name", ["biased-sharp-bicubic", "lrnet-random"])
def test_projection_makes_an_inconsistent_model_consistent_on_real_data(real_lr, name):
    model = _inconsistent_models()[name]
    src = georef(real_lr, res=40.0)
    raw = super_resolve(src, model, consistency=False)
    out = super_resolve(src, model, consistency=True)
    assert "consistency" not in raw.coords and raw.attrs["sr_consistency"] is False
    before, after = _mean_error(real_lr, raw.values), _mean_error(real_lr, out.values)
    assert before > 2e-3  # the model is inconsistent indeed
    assert after <= TARGET and after < before / 50, (before, after)
    # the QA layer is that error, per input pixel, on its scale x scale output pixels
    direct = Projection.for_sensor("sentinel-2", SCALE).error(torch.from_numpy(real_lr), torch.from_numpy(out.values))
    np.testing.assert_allclose(out.consistency.values, direct.numpy().repeat(SCALE, -2).repeat(SCALE, -1),
                               rtol=0, atol=1e-6)
    assert out.consistency.dims == ("time", "y", "x") and out.consistency.attrs["units"] == "1"
    assert f"Gaussian PSF sigma = {PROJECTION_PSF['sentinel-2']:.3f} x scale" in out.consistency.attrs["psf"]


def _high_band_energy(img: np.ndarray, cut: float) -> float:
    """Energy of a Hann-windowed image at frequencies above ``cut`` cycles per pixel (either axis)."""
    h, w = img.shape
    spectrum = np.abs(np.fft.fft2(img * np.outer(np.hanning(h), np.hanning(w)))) ** 2
    fy, fx = np.abs(np.fft.fftfreq(h))[:, None], np.abs(np.fft.fftfreq(w))[None, :]
    return float(spectrum[np.maximum(fy, fx) > cut].sum())


@pytest.mark.parametrize("name", ["biased-sharp-bicubic", "lrnet-random"])
def test_the_correction_is_low_pass_and_keeps_the_models_detail(real_lr, name):
    model = _inconsistent_models()[name]
    src = georef(real_lr, res=40.0)
    raw = super_resolve(src, model, consistency=False).values[0, 0].astype(np.float64)
    out = super_resolve(src, model, consistency=True).values[0, 0].astype(np.float64)
    delta = out - raw
    assert np.abs(delta).max() > 1e-3  # it does correct something
    # the correction is the PSF-blurred zero insertion of an input-grid field: above twice the input's Nyquist
    # frequency (1 / scale cycles per output pixel) its energy is below the PSF's MTF there squared (1.8e-3 for
    # the projection's sigma of 0.40 x scale), with a margin of 1.5
    cut = 1.0 / SCALE
    mtf2 = math.exp(-4 * math.pi**2 * Projection.for_sensor("sentinel-2", SCALE).sigma ** 2 * cut**2)
    assert _high_band_energy(delta, cut) <= 1.5 * mtf2 * _high_band_energy(delta, 0.0)
    # beyond the faint comb at the input sampling frequency, the model's finest detail is kept (0.2 % in energy;
    # the projection's PSF of 0.40 x scale lets a little more of the comb through than the nominal 0.494 did)
    cut = 1.25 / SCALE
    assert _high_band_energy(delta, cut) <= 2e-3 * _high_band_energy(raw, cut)


@pytest.mark.parametrize("tile", [24, 31, 40])
def test_tiled_equals_whole_image_with_the_projection_on_real_data(real_lr, tile):
    model = _inconsistent_models()["lrnet-random"]
    src = georef(np.concatenate([real_lr, real_lr[..., ::-1, :]], axis=1), res=40.0)  # two bands
    whole = super_resolve(src, model)  # one tile: the whole image
    tiled = super_resolve(src.chunk({"y": 13, "x": 17}), model, tile=tile)
    assert len(tiled.data.chunks[2]) > 1 and len(tiled.consistency.data.chunks[2]) > 1
    tiled = tiled.compute()
    assert whole.attrs["sr_consistency"] is True and tiled.attrs["sr_consistency"] is True
    np.testing.assert_allclose(tiled.values, whole.values, rtol=0, atol=1e-5)
    np.testing.assert_allclose(tiled.consistency.values, whole.consistency.values, rtol=0, atol=1e-6)


def test_no_data_pixels_are_nan_in_the_layer_and_get_no_target(real_lr):
    model = _inconsistent_models()["biased-sharp-bicubic"]
    a = real_lr.copy()
    a[0, 0, 30:33, 40:42] = np.nan
    out = super_resolve(georef(a), model, consistency=True)
    layer = out.consistency.values[0]
    assert np.isnan(layer).sum() == 3 * 2 * SCALE * SCALE
    assert np.isnan(layer[30 * SCALE : 33 * SCALE, 40 * SCALE : 42 * SCALE]).all()
    assert np.nanmean(layer) <= TARGET  # consistent around the hole too, not pulled towards the filled zeros
    ring = layer[28 * SCALE : 35 * SCALE, 38 * SCALE : 44 * SCALE]
    assert np.nanmax(ring) < 5 * TARGET


@pytest.mark.parametrize("name", ["nearest", "bilinear", "bicubic", "lanczos"])
def test_interpolation_baselines_are_unchanged_by_default(real_lr, name):
    src = georef(real_lr, res=40.0)
    out = super_resolve(src, name, scale=SCALE)
    with torch.inference_mode():
        ref = models.build(name, scale=SCALE)(torch.from_numpy(real_lr)).numpy()
    np.testing.assert_array_equal(out.values, ref)
    assert out.attrs["sr_consistency"] is False and "consistency" not in out.coords
    projected = super_resolve(src, name, scale=SCALE, consistency=True)
    assert projected.attrs["sr_consistency"] is True and np.abs(projected.values - ref).max() > 1e-4
    assert _mean_error(real_lr, projected.values) <= TARGET < _mean_error(real_lr, ref)


def test_too_small_tiles_say_why():
    a = georef(np.zeros((1, 1, 40, 40), np.float32))
    with pytest.raises(InvalidOptionError, match=r"consistency projection.*consistency=False"):
        super_resolve(a, "bicubic", scale=4, tile=Projection.for_sensor("sentinel-2", 4).margin, consistency=True)
    with pytest.raises(InvalidOptionError, match="sensor"):
        super_resolve(a, "bicubic", scale=4, consistency=True, sensor="landsat-9")


# --- the cube ------------------------------------------------------------------------------------

SMALL_BBOX = (4.48, 51.41, 4.495, 51.42)
DAY = "2024-06-12"


@pytest.fixture(scope="module")
def cubes(sample_url, dask_client, tmp_path_factory):
    root = tmp_path_factory.mktemp("consistency")
    on = run_region(SMALL_BBOX, DAY, model="bicubic", bands=["B04", "B08"], out=str(root / "on.zarr"),
                    client=dask_client, tile=48, consistency=True)
    off = run_region(SMALL_BBOX, DAY, model="bicubic", bands=["B04", "B08"], out=str(root / "off.zarr"),
                     client=dask_client, tile=48, consistency=False)
    return on, off


@pytest.mark.integration
def test_run_region_writes_the_consistency_layer(cubes, sample_url):
    on, off = cubes
    assert "consistency" in on.data_vars and "consistency" not in off.data_vars
    assert on.attrs["consistency_projection"] is True and off.attrs["consistency_projection"] is False
    assert f"Gaussian PSF sigma = {PROJECTION_PSF['sentinel-2']:.3f} x scale" in on.attrs["consistency_psf"]
    assert off.attrs["consistency_psf"] == "none"
    assert on.attrs["request_hash"] != off.attrs["request_hash"]
    layer = on.consistency
    assert layer.dims == ("time", "y", "x") and layer.dtype == np.float32
    assert layer.attrs["units"] == "1" and "sensor PSF" in layer.attrs["long_name"] and "psf" in layer.attrs
    assert layer.chunks == on.clear.chunks and len(layer.chunks[1]) > 1  # chunked like clear, several chunks
    manifest = on.attrs["chunk_manifest"]
    assert manifest["consistency"] == manifest["clear"] > 1  # one write per SR tile, recorded like clear's
    # the values: a direct computation from the cube's reflectance and the input stack
    client = cat.open_catalog(cat.resolve_catalog("sample"))
    items = cat.search(client, "sentinel-2-l2a", BBox(*SMALL_BBOX), DateRange.parse(DAY))
    stack = with_clearance(assemble(items, BBox(*SMALL_BBOX), ["B04", "B08"]), SENTINEL2)
    kept = [i for i, f in enumerate(json.loads(on.attrs["frames"])) if f["kept"]]
    lr = stack.reflectance.isel(time=kept[0]).values[None]
    sr = on.reflectance.isel(time=[0]).values
    direct = Projection.for_sensor("sentinel-2", 4).error(torch.from_numpy(lr), torch.from_numpy(sr)).numpy()
    direct = direct.repeat(4, -2).repeat(4, -1)[0]
    cy, cx = layer.chunks[1][0], layer.chunks[2][0]  # the second chunk along y and x
    chunk = (slice(cy, cy + layer.chunks[1][1]), slice(cx, cx + layer.chunks[2][1]))
    got, want = layer.isel(time=0).values[chunk], direct[chunk]
    finite = np.isfinite(want)
    assert finite.mean() > 0.9
    np.testing.assert_allclose(got[finite], want[finite], rtol=0, atol=1e-6)
    assert float(np.nanmean(layer.values)) <= TARGET
    # and the projection changed the bicubic reflectance only where it had to: everywhere a little
    diff = np.abs(on.reflectance.values - off.reflectance.values)
    assert 0 < np.nanmean(diff) < 0.01


@pytest.mark.integration
def test_multi_frame_and_bad_values_are_refused_before_work(tmp_path):
    out = tmp_path / "never.zarr"
    hrn = tmp_path / "hrn.safetensors"
    models.save_weights(models.build("highresnet", scale=4, **TINY["highresnet"]), hrn, trained=False)
    with pytest.raises(InvalidOptionError, match="multi-frame"):
        run_region(SMALL_BBOX, DAY, catalog="http://127.0.0.1:9", model=str(hrn), allow_untrained=True,
                   consistency=True, out=str(out))
    with pytest.raises(InvalidOptionError, match="consistency must be True or False or None"):
        run_region(SMALL_BBOX, DAY, catalog="http://127.0.0.1:9", consistency="on", out=str(out))
    assert not out.exists()


def test_the_cli_passes_the_option(tmp_path):
    from typer.testing import CliRunner

    from srcube.cli.commands import app

    hrn = tmp_path / "hrn.safetensors"
    models.save_weights(models.build("highresnet", scale=4, **TINY["highresnet"]), hrn, trained=False)
    out = tmp_path / "never.zarr"
    base = ["run", "--bbox", ",".join(map(str, SMALL_BBOX)), "--dates", DAY, "--out", str(out), "--model", str(hrn),
            "--allow-untrained", "--catalog", "http://127.0.0.1:9", "--catalog-retries", "0"]
    asked = CliRunner().invoke(app, [*base, "--consistency"], env={"COLUMNS": "200"})
    assert asked.exit_code == 2 and "multi-frame" in asked.output
    default = CliRunner().invoke(app, base, env={"COLUMNS": "200"})  # None: off for multi-frame, so on to the search
    assert default.exit_code != 0 and "multi-frame" not in default.output and "catalog" in default.output
    assert not out.exists()


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("phase", [(0.0, 0.0), (0.3, -0.2), (0.5, 0.5), (-0.5, 0.25)])
@pytest.mark.parametrize("shape", [(64, 64), (50, 37), (20, 33), (9, 9)])
def test_fast_degradation_operators_equal_the_reference_ones(scale, phase, shape):
    """The projection's D and B, computed one axis at a time only where sampled, equal blur-then-sample
    and zero-insertion-then-blur of models.psf on every size, phase and scale (tiny images: same path)."""
    from srcube.models.psf import blur_decimate, decimate, decimate_adjoint, gaussian_blur, spread_blur

    g = torch.Generator().manual_seed(scale)
    for sigma in (0.35 * scale, 0.494 * scale, 0.65 * scale):
        x = torch.rand(2, 3, *shape, generator=g, dtype=torch.float64)
        ref = decimate(gaussian_blur(x, sigma), scale, "point", phase)
        torch.testing.assert_close(blur_decimate(x, sigma, scale, "point", phase), ref, rtol=0, atol=1e-12)
        y = torch.rand(2, 3, shape[0] // scale, shape[1] // scale, generator=g, dtype=torch.float64)
        ref = gaussian_blur(decimate_adjoint(y, scale, shape, "point", phase), sigma)
        torch.testing.assert_close(spread_blur(y, sigma, scale, shape, "point", phase), ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("n", [11, 12, 13])
def test_projection_on_axes_around_twice_the_band_order(n):
    """An axis of exactly 2 x order input pixels is too short for the banded inverse's 2 order + 1 taps: the
    exact dense inverse serves it (a hypothesis example once found the crash at 12)."""
    proj = Projection.for_sensor("sentinel-2", 2)
    g = torch.Generator().manual_seed(n)
    lr = torch.rand(1, 1, 1, n, generator=g, dtype=torch.float64)
    sr = torch.rand(1, 1, 2, 2 * n, generator=g, dtype=torch.float64)
    out, err = proj.project(lr, sr)
    assert out.shape == sr.shape and torch.isfinite(out).all() and float(err.max()) < 1e-2


def test_a_model_that_ends_in_a_projection_is_projected_again_with_its_own_psf(real_lr):
    """The pipeline's projection after an lrnet that ends in one is the model's own (its PSF, not the sensor
    default): a second pass with another PSF would undo the first's choice. The cube's attributes say which."""
    lrnet = randomize(models.build("lrnet", scale=SCALE, features=8, blocks=1, project="sentinel-2",
                                   project_sigma=0.45), seed=3, std=0.05).eval()
    src = georef(real_lr, res=40.0)
    raw = super_resolve(src, lrnet, consistency=False)
    out = super_resolve(src, lrnet, consistency=True)
    assert "Gaussian PSF sigma = 0.450 x scale" in out.consistency.attrs["psf"]
    # the model's output is consistent already under its own PSF, so the second pass changes next to nothing
    own = Projection.for_sensor("sentinel-2", SCALE, sigma=0.45)
    assert float(own.error(torch.from_numpy(real_lr), torch.from_numpy(raw.values)).mean()) < 1e-4
    assert float(np.abs(out.values - raw.values).max()) < 1e-3
    default = Projection.for_sensor("sentinel-2", SCALE)  # a pass with the default PSF would have moved it
    moved = default.apply(torch.from_numpy(real_lr).double(), torch.from_numpy(raw.values).double())
    assert float((moved - torch.from_numpy(raw.values).double()).abs().max()) > 1e-2
