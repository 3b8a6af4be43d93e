"""Every model through the pipeline: exact tiling with real receptive fields, and run_region."""

import numpy as np
import pytest
import torch
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from srcube import models
from srcube.models.consistency import Projection
from srcube.pipeline import run_region, super_resolve
from srcube.pipeline.assemble.stack import assemble, with_clearance
from srcube.pipeline.errors import (
    IncompatibleWeightsError,
    InvalidOptionError,
    UntrainedWeightsError,
    WeightsNotFoundError,
)
from srcube.pipeline.params import BBox, DateRange
from srcube.pipeline.search import catalog as cat
from srcube.pipeline.sensors import SENTINEL2
from srcube.pipeline.testing import sample
from tests.support.helpers import TINY, georef, randomize

SINGLE = ["srcnn", "elsr", "srgan", "esrgan"]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(SINGLE), scale=st.sampled_from([2, 3, 4]), h=st.integers(20, 60),
       w=st.integers(20, 60), seed=st.integers(0, 1000), extra_margin=st.integers(0, 4),
       extra_tile=st.integers(0, 24), chunk=st.integers(7, 30))
def test_tiled_learned_models_equal_a_whole_image_pass(name, scale, h, w, seed, extra_margin, extra_tile, chunk):
    model = randomize(models.build(name, scale=scale, **TINY[name]), seed=seed, std=0.05).eval()
    a = np.random.default_rng(seed).random((1, 2, h, w), dtype=np.float32)
    margin = model.receptive_field + extra_margin
    tile = max(16, margin) + extra_tile  # from the smallest legal tile (margin <= tile) up
    got = super_resolve(georef(a).chunk({"y": chunk, "x": chunk}), model, tile=tile, margin=margin,
                        consistency=False).compute().values
    with torch.inference_mode():
        whole = model(torch.from_numpy(a)).numpy()
    np.testing.assert_allclose(got, whole, rtol=0, atol=1e-5)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(SINGLE), scale=st.sampled_from([2, 3, 4]), extra_h=st.integers(0, 20),
       extra_w=st.integers(0, 20), seed=st.integers(0, 1000), extra_margin=st.integers(0, 4),
       extra_tile=st.integers(0, 16), chunk=st.integers(7, 30))
def test_tiled_learned_models_with_the_consistency_projection_equal_a_whole_image_pass(
        name, scale, extra_h, extra_w, seed, extra_margin, extra_tile, chunk):
    """On by default for learned models: tiles borrow the projection's reach on top of the receptive field."""
    model = randomize(models.build(name, scale=scale, **TINY[name]), seed=seed, std=0.05).eval()
    projection = Projection.for_sensor("sentinel-2", scale)
    margin = model.receptive_field + projection.margin + extra_margin
    tile = margin + extra_tile  # from the smallest legal tile (margin <= tile) up
    h, w = tile + margin + extra_h, tile + margin + extra_w  # at least two tiles on each axis
    a = np.random.default_rng(seed).random((1, 2, h, w), dtype=np.float32)
    lazy = super_resolve(georef(a).chunk({"y": chunk, "x": chunk}), model, tile=tile, margin=margin)
    assert lazy.attrs["sr_consistency"] is True and len(lazy.data.chunks[2]) > 1 and len(lazy.data.chunks[3]) > 1
    out = lazy.compute()
    x = torch.from_numpy(a)
    with torch.inference_mode():
        whole, err = projection.project(x, model(x))
    np.testing.assert_allclose(out.values, whole.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(out.consistency.values, err.numpy().repeat(scale, -2).repeat(scale, -1), rtol=0,
                               atol=1e-6)


@pytest.fixture(scope="module")
def untrained_weights(tmp_path_factory):
    """Seeded random weights for each single-image architecture, honestly marked untrained."""
    root = tmp_path_factory.mktemp("weights")
    paths = {}
    for name in SINGLE:
        torch.manual_seed(0)
        m = models.build(name, scale=4, **TINY[name])
        paths[name] = root / f"{name}-random-x4.safetensors"
        models.save_weights(m, paths[name], trained=False,
                            training={"data": "none: random initialisation for pipeline tests"})
    return paths


SMALL_BBOX = (4.48, 51.41, 4.495, 51.42)


@pytest.mark.integration
@pytest.mark.parametrize("name", ["nearest", "bilinear", "bicubic", "lanczos", *SINGLE])
def test_every_single_image_model_through_run_region(name, untrained_weights, sample_url, dask_client, tmp_path):
    model = str(untrained_weights[name]) if name in untrained_weights else name
    out = tmp_path / f"{name}.zarr"
    ds = run_region(SMALL_BBOX, "2024-06-12", model=model, out=str(out), client=dask_client,
                    bands=["B04", "B08"], allow_untrained=True)
    assert ds.reflectance.shape[1:] == (2, ds.sizes["y"], ds.sizes["x"]) and ds.rio.resolution() == (2.5, -2.5)
    assert np.isfinite(ds.reflectance.values).all()
    assert ds.attrs["model"] == name and ds.attrs["complete"] is True
    if name in untrained_weights:
        assert ds.attrs["model_trained"] is False and len(ds.attrs["weights_sha256"]) == 64
        assert "random initialisation" in ds.attrs["training_data"]
    else:
        assert ds.attrs["model_kind"] == "interpolation"


@pytest.mark.integration
def test_untrained_or_missing_weights_never_run(untrained_weights, sample_url, tmp_path):
    out = tmp_path / "never.zarr"
    with pytest.raises(UntrainedWeightsError, match="marked untrained"):
        run_region(SMALL_BBOX, "2024-06-12", model=str(untrained_weights["elsr"]), out=str(out))
    with pytest.raises(WeightsNotFoundError, match="no trained weights"):
        run_region(SMALL_BBOX, "2024-06-12", model="esrgan", out=str(out))
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        run_region(SMALL_BBOX, "2024-06-12", model=str(tmp_path / "nope.safetensors"), out=str(out))
    with pytest.raises(IncompatibleWeightsError, match="x4, not x2"):
        run_region(SMALL_BBOX, "2024-06-12", model=str(untrained_weights["elsr"]), scale=2, out=str(out),
                   allow_untrained=True)
    with pytest.raises(InvalidOptionError, match="fuses at most 4"):
        hrn = tmp_path / "hrn.safetensors"
        models.save_weights(models.build("highresnet", scale=4, **TINY["highresnet"]), hrn, trained=False)
        run_region(SMALL_BBOX, "2024-06-12", model=str(hrn), out=str(out), allow_untrained=True, n_views=8)
    assert not out.exists()


def test_fixed_band_weights_check_the_bands(tmp_path):
    path = tmp_path / "rgbn.safetensors"
    models.save_weights(models.build("elsr", scale=2, bands=("B02", "B03", "B04", "B08")), path, trained=True)
    a = georef(np.random.default_rng(0).random((1, 4, 20, 20), dtype=np.float32))
    a = a.assign_coords(band=["B02", "B03", "B04", "B08"])
    assert super_resolve(a, str(path)).shape == (1, 4, 40, 40)
    with pytest.raises(IncompatibleWeightsError, match="trained for bands"):
        super_resolve(a.assign_coords(band=["B08", "B04", "B03", "B02"]), str(path))


@pytest.mark.integration
def test_highresnet_on_a_frames_tensor_from_the_sample(sample_url):
    """Multi-frame until composites land in run_region: the clear frames of the sample stack."""
    client = cat.open_catalog(cat.resolve_catalog("sample"))
    bbox = BBox(*SMALL_BBOX)
    items = cat.search(client, "sentinel-2-l2a", bbox, DateRange.parse(sample.DEFAULT_DATES))
    stack = with_clearance(assemble(items, bbox, ["B04", "B08"]), SENTINEL2).compute()
    views = torch.from_numpy(stack.reflectance.values)[None]  # (1, T=6, C=2, H, W)
    masks = torch.from_numpy(stack.clear.values.astype(np.float32))[None]
    model = models.build("highresnet", scale=3, features=8, n_views=8).eval()
    with torch.inference_mode():
        sr = model(views, masks)
    assert sr.shape == (1, 2, 3 * stack.sizes["y"], 3 * stack.sizes["x"])
    # untrained HighRes-net = bicubic of the clear-median composite: cloud-free, unlike any one frame
    b04 = sr[0, 0].numpy()
    assert float(np.percentile(b04, 99)) < 0.2 < float(np.percentile(stack.reflectance.values[:, 0], 99))
    assert isinstance(stack, xr.Dataset)
