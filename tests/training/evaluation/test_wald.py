"""The Wald protocol (training/evaluation/wald.py): its degradation, the robustness table, real crops, band
sharpeners, the consistency projection, and `srcube evaluate` over a split."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from srcube import models
from srcube.cli.commands import app
from srcube.models.psf import ROBUSTNESS, sensor_degradation
from srcube.training.datasets.scenes import scenes
from srcube.training.evaluation.report import robustness_markdown
from srcube.training.evaluation.scenes import IncompatibleSceneError, SceneData, scene_data
from srcube.training.evaluation.score import summarize
from srcube.training.evaluation.stats import PEAK_CONVENTION, Bootstrap
from srcube.training.evaluation.wald import WALD, evaluate_wald, robustness_table
from tests.support.helpers import shared_path
from tests.support.textures import noisy, texture

runner = CliRunner()


class Oracle(models.SRModel):
    """A deliberately better "model": returns the reference itself (+ 1e-4 noise, so PSNR stays finite)."""

    name = "oracle"

    def __init__(self, reference: torch.Tensor, scale: int) -> None:
        super().__init__(scale=scale, channels=reference.shape[0])
        self.reference = noisy(torch.as_tensor(reference, dtype=torch.float64), 1e-4, 1).float()

    @property
    def receptive_field(self) -> int:
        return 0

    def sr(self, x: torch.Tensor) -> torch.Tensor:
        return self.reference[None].to(x.dtype)


def test_the_evaluation_degradation_is_the_validation_one_of_training():
    x = texture(2, 48, 48, seed=21).float()
    assert WALD == sensor_degradation() and WALD.decimation == "point"  # SceneWald validates with it too
    for s in (2, 3, 4):
        assert torch.equal(WALD(x, s), sensor_degradation()(x, s))


def test_robustness_table_has_a_row_per_degradation():
    data = SceneData("synthetic", texture(2, 96, 96, seed=14).float().numpy(), ("a", "b"))
    # x4: at x2, point sampling at the 2 x 2 block centre (linear interpolation) is the block mean: area
    table = robustness_table(models.build("bilinear", scale=4), [data], 4, bootstrap=Bootstrap(resamples=200))
    assert len(table) == len(ROBUSTNESS) == 14
    assert [r["label"] for r in table] == [d.label for d in ROBUSTNESS] and len({r["label"] for r in table}) == 14
    for r in table:
        assert r["n"] == 2 and r["mean_gain_ci"][0] <= r["mean_gain"] <= r["mean_gain_ci"][1]
    assert len({round(r["mean_gain"], 4) for r in table}) == 14  # the degradations differ
    md = robustness_markdown(table)
    assert md.count("\n") == 15 and "gauss 0.65s + area + noise 0.001" in md
    same = robustness_table(models.build("bicubic", scale=4), [data], 4, bootstrap=Bootstrap(resamples=200))
    assert all(r["mean_gain"] == 0.0 and r["mean_gain_ci"] == [0.0, 0.0] for r in same)


def test_evaluate_wald_on_a_real_crop_bicubic_gains_nothing_and_the_reference_gains_a_lot():
    shared_path("sentinel2_l1c_T49JGM_dsen2")
    torch.set_num_threads(2)
    data = scene_data(scenes("s2-10m", "test")[0], multiple=4, crop=(64, 64, 128))
    assert data.reference.shape == (4, 128, 128) and data.bands == ("B02", "B03", "B04", "B08")
    same = evaluate_wald(models.build("bicubic", scale=4), data, 4)
    assert [r.band for r in same.rows] == list(data.bands) and same.degradation == WALD.label
    for r in same.rows:
        assert r.gains["bicubic"] == (0.0, (0.0, 0.0)) and r.peak == pytest.approx(float(data.reference[
            list(data.bands).index(r.band)].max()))
        assert r.model.psnr_ci[0] < r.model.psnr < r.model.psnr_ci[1] and r.model.psnr < 45
        assert r.opensr["omission_pct"] > 80  # bicubic adds no detail
    better = evaluate_wald(Oracle(torch.from_numpy(data.reference), 4), data, 4)
    for r in better.rows:
        gain, (lo, hi) = r.gains["bicubic"]
        assert gain > 20 and 15 < lo < gain < hi and r.opensr["improvement_pct"] > 90


def test_band_sharpeners_are_scored_with_the_low_guide_wald_variant():
    shared_path("sentinel2_l1c_T49JGM_dsen2")
    torch.set_num_threads(2)
    data = scene_data(scenes("s2-20m", "test")[0], multiple=2, crop=(0, 0, 96))
    assert data.reference.shape == (6, 96, 96) and data.guide is not None and data.guide.shape == (4, 192, 192)
    res = evaluate_wald(models.build("hpf", scale=2), data, 2)
    assert [r.band for r in res.rows] == ["B05", "B06", "B07", "B8A", "B11", "B12"]
    for r in res.rows:
        assert set(r.baselines) == {"bicubic", "hpf"} and r.gains["hpf"] == (0.0, (0.0, 0.0))
    assert summarize([res])["mean_gain"] > 0  # the guide helps on this crop
    with pytest.raises(IncompatibleSceneError, match="guide"):  # sharpeners need the guide of s2-20m
        evaluate_wald(models.build("hpf", scale=2), scene_data(scenes("s2-10m", "test")[0], multiple=2,
                                                                      crop=(0, 0, 64)), 2)


def test_cli_evaluates_a_split_and_keeps_the_image_mode(tmp_path):
    shared_path("sentinel2_l2a_cog_S2A_29RKH_20200219")
    res = runner.invoke(app, ["evaluate", "--model", "bicubic", "--scale", "4", "--split", "validation", "--task",
                              "s2-10m", "--max-side", "64", "--out", str(tmp_path / "val.json")],
                        env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "val.json").read_text())
    assert [s["name"] for s in doc["scenes"]] == ["29RKH"] and doc["skipped"] == []
    assert len(doc["rows"]) == 4 and len(doc["robustness"]) == 14 and doc["peak_convention"] == PEAK_CONVENTION
    assert doc["degradation"]["label"] == WALD.label and doc["summary"]["mean_gain"] == 0.0
    assert "| 29RKH | B08 |" in res.output and "gauss 0.35s + point + noise 0.001" in res.output
    res = runner.invoke(app, ["evaluate", "--model", "bicubic", "--split", "test", "--task", "s2-10m", "--report"])
    assert res.exit_code == 2 and "needs weights" in " ".join(res.output.split())
    res = runner.invoke(app, ["evaluate", "--model", "bicubic", "--split", "validation"])
    assert res.exit_code == 2 and "--task" in res.output
    res = runner.invoke(app, ["evaluate", "--model", "bicubic", "--split", "train", "--task", "s2-10m"])
    assert res.exit_code == 2 and "validation" in res.output


def test_projected_evaluation_adds_the_projection_baseline():
    """As deployed, a learned model's output goes through the consistency projection; its context baseline is
    bicubic made consistent the same way (so bicubic evaluated as a "projected model" gains exactly 0 over it)."""
    data = SceneData("synthetic", texture(2, 96, 96, seed=31).float().numpy(), ("a", "b"))
    res = evaluate_wald(models.build("bicubic", scale=4), data, 4, bootstrap=Bootstrap(resamples=100),
                           opensr=False, with_ssim=False, project=True)
    for row in res.rows:
        assert set(row.gains) == {"bicubic", "bicubic+projection"}
        assert abs(row.gains["bicubic+projection"][0]) < 1e-6
        assert row.gains["bicubic"][0] > 0  # the projection restores what the PSF took (data consistency)
