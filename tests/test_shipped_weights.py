"""The weights srcube ships: intact, documented, honest about their metrics, and used by "auto"."""

import json

import pytest
import torch

import models
from models.weights import SHIPPED_DIR, read_meta, sha256_file, shipped_weights

SHIPPED = sorted(shipped_weights())


def test_srcube_ships_sentinel2_x2_x4_and_probav_x3():
    assert {"s2-sisr-x2", "s2-sisr-x4", "probav-highresnet-x3"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_are_intact_and_documented(name):
    meta = read_meta(SHIPPED_DIR / f"{name}.json")
    assert meta.trained and sha256_file(SHIPPED_DIR / f"{name}.safetensors") == meta.sha256
    assert (SHIPPED_DIR / f"{name}.safetensors").stat().st_size < 5_000_000  # small enough for the repo
    card = (SHIPPED_DIR / f"{name}.md").read_text()
    for section in ("## Data", "## Recipe", "## Validation", "## Limits", "## Licence"):
        assert section in card
    assert meta.training["sensors"] and meta.training["recipe"]["model"]["architecture"] == meta.architecture
    model = models.load_model(name)
    assert model.weights_meta.sha256 == meta.sha256 and model.receptive_field == meta.receptive_field
    m = meta.metrics
    key = "cpsnr" if model.multi_frame else "psnr"
    assert {key, key + "_bicubic", "best_epoch"} <= set(m)
    # the card's table is the metadata's numbers
    assert f"{m[key]:.4f}" in card and f"{m[key + '_bicubic']:.4f}" in card


@pytest.mark.parametrize(("sensor", "scale", "multi_frame"), [
    ("sentinel-2", 2, False), ("sentinel-2", 4, False), ("sentinel-2", 3, False), ("proba-v", 4, False),
    ("proba-v", 3, True), ("proba-v", 3, False)])
def test_default_model_is_a_shipped_model_only_where_it_beats_bicubic(sensor, scale, multi_frame):
    name = models.default_model(sensor, scale, multi_frame=multi_frame)
    if name != "bicubic":
        meta = read_meta(SHIPPED_DIR / f"{name}.json")
        m = meta.metrics
        assert m["psnr"] > m["psnr_bicubic"] and m["ssim"] > m["ssim_bicubic"]
        assert meta.scale == scale and models.load_model(name).multi_frame == multi_frame
    else:  # nothing shipped for this sensor/scale/kind beats bicubic on both PSNR and SSIM
        for other in SHIPPED:
            meta = read_meta(SHIPPED_DIR / f"{other}.json")
            if meta.scale == scale and sensor in meta.training["sensors"] and \
                    models.load_model(other).multi_frame == multi_frame:
                m = meta.metrics
                assert m["psnr"] <= m["psnr_bicubic"] or m["ssim"] <= m["ssim_bicubic"], other
    if (sensor, scale) == ("sentinel-2", 3):
        assert name == "bicubic"  # nothing shipped at x3 for Sentinel-2


def _rescore_params() -> list:
    slow = pytest.mark.slow  # the multi-frame validation set takes ~40 s to rebuild and score on 2 cores
    return [pytest.param(n, marks=slow) if read_meta(SHIPPED_DIR / f"{n}.json").architecture == "highresnet"
            else n for n in SHIPPED]


@pytest.mark.parametrize("name", _rescore_params())
def test_shipped_weights_beat_bicubic_when_scored_again(name):
    """Rebuild the validation area from the recipe in the weights' metadata and score the model
    and bicubic on it again: the shipped numbers must be reproducible, and a win."""
    from training.config import parse_config
    from training.evaluate import evaluate_dataset
    from training.trainer import make_datasets

    from .conftest import shared_path

    meta = read_meta(SHIPPED_DIR / f"{name}.json")
    recipe = dict(meta.training["recipe"])
    recipe.pop("path", None)
    for source in recipe["data"]["sources"]:  # skip with the reason when ../shared is absent
        if source.startswith("${SHARED}/data/"):
            shared_path(*source.removeprefix("${SHARED}/data/").split("/"))
    cfg = parse_config(recipe)
    torch.set_num_threads(2)
    _, val = make_datasets(cfg)
    result = evaluate_dataset(models.load_model(name), (val[i] for i in range(len(val))))
    got, base = result["model"], result["bicubic"]
    assert got["psnr"] > base["psnr"] and got["ssim"] > base["ssim"]
    for key in ("psnr", "ssim"):
        assert got[key] == pytest.approx(meta.metrics[key], abs=1e-3)
        assert base[key] == pytest.approx(meta.metrics[key + "_bicubic"], abs=1e-3)


@pytest.mark.integration
def test_run_region_auto_uses_the_default_model(sample_url, dask_client, tmp_path):
    from pipeline import run_region, sample

    ds = run_region((4.48, 51.41, 4.495, 51.42), "2024-06-12", model="auto", scale=4, bands=["B04"],
                    out=str(tmp_path / "auto.zarr"), client=dask_client)
    assert ds.attrs["model"] in ("bicubic", "srgan") and ds.attrs["scale"] == 4
    expected = models.default_model("sentinel-2", 4)
    assert (ds.attrs["weights"] == expected) if expected != "bicubic" else ds.attrs["model"] == "bicubic"
    assert json.loads(ds.attrs["frames"])  # a real run
    assert sample.DEFAULT_DATES


def test_a_shipped_model_super_resolves_a_real_scene():
    name = models.default_model("sentinel-2", 4)
    if name == "bicubic":
        pytest.skip("no shipped Sentinel-2 x4 model beats bicubic")
    model = models.load_model(name)
    x = torch.rand(1, 3, 40, 40) * 0.3
    with torch.inference_mode():
        y = model(x)
    assert y.shape == (1, 3, 160, 160) and torch.isfinite(y).all()
