"""The weights srcube ships: intact, documented from their test-split reports, and used by "auto" only where
those reports show a gain beyond doubt."""

import json

import pytest
import torch

from srcube import models
from srcube.models.weights import SHIPPED_DIR, read_meta, sha256_file, shipped_weights
from srcube.training.datasets.scenes import scenes
from tests.support.helpers import REPO

SHIPPED = sorted(shipped_weights())
TEN = ["B02", "B03", "B04", "B08"]

STALE = "README tables are stale: run python -m srcube.training.card --readme README.md"


def _report(name: str) -> dict:
    return json.loads((SHIPPED_DIR / f"{name}.test.json").read_text())


def test_srcube_ships_cross_band_band_agnostic_multi_frame_and_sharpening_weights():
    assert {"s2-xband-x2", "s2-xband-x4", "s2-sisr-x2", "s2-sisr-x4", "probav-highresnet-x3"} <= set(SHIPPED)
    kinds = {models.entry(read_meta(SHIPPED_DIR / f"{n}.json").architecture).kind for n in SHIPPED}
    assert {"single-image", "multi-frame"} <= kinds


@pytest.mark.parametrize("name", SHIPPED)
def test_the_values_stored_in_shipped_weights_are_their_parameters(name):
    """`srcube models` counts a weights file's parameters from its header (no torch): the count of the model built."""
    from srcube.models.base import count_parameters
    from srcube.models.weights import stored_values

    meta = read_meta(SHIPPED_DIR / f"{name}.json")
    assert stored_values(SHIPPED_DIR / f"{name}.json") == count_parameters(models.build(meta.architecture,
                                                                                        **meta.config))


def test_a_weights_file_without_a_header_is_refused_by_name(tmp_path):
    from srcube.models.weights import stored_values

    (tmp_path / "bad.safetensors").write_bytes(b"\xff" * 8 + b"{}")
    with pytest.raises(models.IncompatibleWeightsError, match=r"bad.safetensors is not a readable safetensors"):
        stored_values(tmp_path / "bad.json")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_are_intact_and_carry_their_test_report(name):
    meta = read_meta(SHIPPED_DIR / f"{name}.json")
    assert meta.trained and sha256_file(SHIPPED_DIR / f"{name}.safetensors") == meta.sha256
    assert (SHIPPED_DIR / f"{name}.safetensors").stat().st_size < 5_000_000  # small enough for the repo
    model = models.load_model(name)
    assert model.weights_meta.sha256 == meta.sha256 and model.receptive_field == meta.receptive_field
    report = _report(name)
    assert report["weights_sha256"] == meta.sha256 and report["weights"] == name  # of these very weights
    task = meta.training["recipe"]["data"]["task"]
    test_places = [s.name for s in scenes(task, "test")]
    assert [s.get("name", s.get("scene")) for s in report["scenes"]] == test_places and report["split"] == "test"
    seen = {s.name for split in ("train", "validation") for s in scenes(task, split)}
    assert not seen & set(test_places)  # reported on places used neither to train nor to select


@pytest.mark.parametrize("name", SHIPPED)
def test_model_cards_state_data_recipe_test_split_speed_and_limits_from_the_numbers(name):
    meta = read_meta(SHIPPED_DIR / f"{name}.json")
    card = (SHIPPED_DIR / f"{name}.md").read_text()
    for section in ("## Data", "## Recipe", "## Validation", "## Speed", "## Limits", "## Licence"):
        assert section in card
    assert meta.sha256 in card and "Mpix/s" in card
    report = _report(name)
    for s in report["scenes"]:
        assert s.get("name", s.get("scene")) in card
    if models.load_model(name).multi_frame:
        assert "Kelvins" in card and f"{report['summary']['mean_gain']:+.2f}" in card
        return
    from srcube.training.evaluation import rows_markdown, summary_markdown

    assert "## Test split" in card and report["peak_convention"] in card
    assert rows_markdown(report["rows"]) in card and summary_markdown(report["summary"]) in card


CASES = [("sentinel-2", 2, TEN, False), ("sentinel-2", 2, ["B05"], False), ("sentinel-2", 4, TEN, False),
         ("sentinel-2", 4, ["B04", "B8A"], False), ("sentinel-2", 3, None, False), ("proba-v", 3, None, True),
         ("proba-v", 3, None, False)]


@pytest.mark.parametrize(("sensor", "scale", "bands", "multi_frame"), CASES)
def test_auto_picks_among_weights_with_a_sure_test_gain_by_their_validation_gain(sensor, scale, bands, multi_frame):
    name = models.default_model(sensor, scale, multi_frame=multi_frame, bands=bands)
    qualifying = {}
    for other in SHIPPED:
        meta = read_meta(SHIPPED_DIR / f"{other}.json")
        kind = models.entry(meta.architecture).kind
        if meta.scale != scale or sensor not in meta.training["sensors"] or kind == "sharpen":
            continue
        if (kind == "multi-frame") != multi_frame or (meta.bands is not None and meta.bands != bands):
            continue
        s = _report(other)["summary"]
        if s["mean_gain_ci"][0] > 0:  # the lower end of the 95 % interval of the mean gain above zero
            qualifying[other] = meta.metrics.get("psnr_gain", 0.0)  # ranked on validation, never on test
    if qualifying:
        assert name == max(qualifying, key=qualifying.get)
    else:
        assert name == "bicubic"


def test_the_readme_tables_are_the_reports():

    from srcube.training.card import defaults_markdown, test_table_markdown

    readme = (REPO / "README.md").read_text()
    assert test_table_markdown() in readme, STALE
    assert defaults_markdown() in readme, STALE


def test_update_readme_rewrites_only_between_the_markers(tmp_path):
    from srcube.training.card import defaults_markdown, update_readme

    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- defaults-table -->\nold\n<!-- /defaults-table -->\nmiddle\n"
                      "<!-- test-table -->\n<!-- /test-table -->\nend\n")
    assert update_readme(readme) == ["defaults-table", "test-table"]
    text = readme.read_text()
    assert text.startswith("intro\n") and "middle\n" in text and text.endswith("end\n") and "old" not in text
    assert defaults_markdown() in text and update_readme(readme) == []  # idempotent
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="markers"):
        update_readme(readme)


def _rescore_params() -> list:
    slow = pytest.mark.slow  # the multi-frame test scenes take minutes to score again on 2 cores
    return [pytest.param(n, marks=slow) if models.entry(read_meta(SHIPPED_DIR / f"{n}.json").architecture).kind
            == "multi-frame" else n for n in SHIPPED]


@pytest.mark.parametrize("name", _rescore_params())
def test_the_test_report_is_reproduced_when_scored_again(name):
    """Score the shipped weights again on the first test scene (the headline degradation, no robustness
    table): the per-band PSNR of the model and of bicubic are the report's (same data, same protocol)."""
    from srcube.training import evaluation as ev

    meta = read_meta(SHIPPED_DIR / f"{name}.json")
    report = _report(name)
    task = meta.training["recipe"]["data"]["task"]
    first = scenes(task, "test")[0]
    if not first.available():
        pytest.skip(f"{first.path} is absent (../shared/data not beside the repository)")
    torch.set_num_threads(2)
    model = models.load_model(name)
    if model.multi_frame:
        doc = ev.evaluate_probav_split(model, "test", name=name)
        assert doc["summary"]["mean_gain"] == pytest.approx(report["summary"]["mean_gain"], abs=1e-3)
        return
    project = bool(meta.training.get("consistency_projection"))
    data = ev.scene_data(first, multiple=model.scale)
    got = ev.evaluate_wald(model, data, model.scale, ev.WALD, bootstrap=ev.Bootstrap(resamples=50),
                           opensr=False, with_ssim=False, project=project)
    rows = {(r["scene"], r["band"]): r for r in report["rows"]}
    for row in got.to_json()["rows"]:
        want = rows[(row["scene"], row["band"])]
        assert row["psnr"] == pytest.approx(want["psnr"], abs=2e-3)
        assert row["baselines"]["bicubic"]["psnr"] == pytest.approx(want["baselines"]["bicubic"]["psnr"], abs=2e-3)


@pytest.mark.integration
def test_run_region_auto_uses_the_default_model(sample_url, dask_client, tmp_path):
    from srcube.pipeline import run_region

    ds = run_region((4.48, 51.41, 4.495, 51.42), "2024-06-12", model="auto", scale=4, bands=["B04"],
                    out=str(tmp_path / "auto.zarr"), client=dask_client)
    expected = models.default_model("sentinel-2", 4, bands=["B04"])
    assert ds.attrs["scale"] == 4 and json.loads(ds.attrs["frames"])  # a real run
    if expected == "bicubic":
        assert ds.attrs["model"] == "bicubic"
    else:
        assert ds.attrs["weights"] == expected


def test_auto_with_composite_windows_fuses_with_the_multi_frame_weights_that_qualify():
    from srcube.models.registry import beats_bicubic
    from srcube.pipeline.plan import auto_model

    fused = models.default_model("proba-v", 3, multi_frame=True)
    single = models.default_model("proba-v", 3)
    assert auto_model("proba-v", 3, None, "30D") == (fused if fused != "bicubic" else single)
    assert auto_model("proba-v", 3, None, None) == single  # no windows: one output frame per date
    if "probav-highresnet-x3" in SHIPPED and beats_bicubic("probav-highresnet-x3")[0]:
        assert auto_model("proba-v", 3, ["NIR"], "30D") == "probav-highresnet-x3"
    # no multi-frame weights for Sentinel-2: windows or not, the single-image default
    assert auto_model("sentinel-2", 4, TEN, "30D") == models.default_model("sentinel-2", 4, bands=TEN)


def test_the_default_for_the_10m_bands_super_resolves_four_bands_together():
    name = models.default_model("sentinel-2", 4, bands=TEN)
    if name == "bicubic":
        pytest.skip("no shipped Sentinel-2 x4 model for B02 B03 B04 B08 beats bicubic on its test split")
    model = models.load_model(name)
    x = torch.rand(1, 4, 40, 40) * 0.3
    with torch.inference_mode():
        y = model(x)
    assert y.shape == (1, 4, 160, 160) and torch.isfinite(y).all()
    if model.bands is not None:  # cross-band weights take exactly their bands
        with pytest.raises(Exception, match=r"band|channel"):
            model(torch.rand(1, 3, 40, 40))


def test_auto_sharpens_with_the_learned_weights_only_for_exactly_their_bands():
    low = ["B05", "B06", "B07", "B8A", "B11", "B12"]
    if "s2-sharpen-x2" not in SHIPPED:
        pytest.skip("no learned sharpener shipped")
    s = _report("s2-sharpen-x2")["summary_hpf"]
    want = "s2-sharpen-x2" if s["mean_gain_ci"][0] > 0 else "hpf"
    assert models.default_sharpener(["B02", "B03", "B04", "B08", *low]) == want
    assert models.default_sharpener(["B04", "B8A", "B11"]) == "hpf"  # a subset: the band-agnostic baseline
    assert models.default_sharpener(list(reversed(low))) == "hpf"  # another order
