"""The evaluation that selects and reports models (training/evaluation.py): PSNR against the reference's
own peak, block-bootstrap intervals, the opensr-test metrics on constructed cases, the robustness table,
splits by place, the Wald protocol on real scenes, the test report, the card and the README table, the CLI."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from srcube import models
from srcube.cli.commands import app
from srcube.models.psf import ROBUSTNESS, sensor_degradation
from srcube.training import card
from srcube.training import evaluation as ev
from srcube.training.datasets.scenes import SCENES, scenes
from srcube.training.metrics import psnr
from tests.support.helpers import REPO, shared_path

runner = CliRunner()

STALE = "README tables are stale: run python -m srcube.training.card --readme README.md"


def texture(bands: int, h: int, w: int, seed: int = 0, cutoff: float = 0.08) -> torch.Tensor:
    """Periodic low-pass noise around 0.15 reflectance (std 0.05), float64, (bands, h, w)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(bands, h, w, generator=g, dtype=torch.float64)
    fy, fx = torch.fft.fftfreq(h, dtype=torch.float64)[:, None], torch.fft.fftfreq(w, dtype=torch.float64)[None]
    t = torch.fft.ifft2(torch.fft.fft2(noise) * torch.exp(-(fy**2 + fx**2) / (2 * cutoff**2))).real
    return 0.15 + 0.05 * t / t.std(dim=(-2, -1), keepdim=True)


def fourier_shift(x: torch.Tensor, dy: float, dx: float) -> torch.Tensor:
    """x displaced by (dy, dx) pixels: out(p) = x(p - d), periodic."""
    h, w = x.shape[-2:]
    fy, fx = torch.fft.fftfreq(h, dtype=torch.float64)[:, None], torch.fft.fftfreq(w, dtype=torch.float64)[None]
    return torch.fft.ifft2(torch.fft.fft2(x) * torch.exp(-2j * math.pi * (fy * dy + fx * dx))).real


def noisy(x: torch.Tensor, std: float, seed: int) -> torch.Tensor:
    return x + std * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype)


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


# --- PSNR against the reference's own peak, intervals ----------------------------------------------------


def test_psnr_against_own_peak_is_psnr_at_peak_one_plus_20_log10_peak():
    ref = texture(1, 64, 64)[0]
    x = noisy(ref, 0.01, 1)
    value, peak = ev.psnr_own_peak(x, ref)
    assert peak == float(ref.max()) and 0.2 < peak < 0.5
    assert value == pytest.approx(psnr(x, ref) + 20 * math.log10(peak), abs=1e-9)
    assert psnr(x, ref) - value > 6  # what a peak of 1.0 would have added
    # the gain over a baseline does not depend on the peak
    base = noisy(ref, 0.02, 2)
    assert value - ev.psnr_own_peak(base, ref)[0] == pytest.approx(psnr(x, ref) - psnr(base, ref), abs=1e-9)


def test_the_evaluation_degradation_is_the_validation_one_of_training():
    x = texture(2, 48, 48, seed=21).float()
    assert ev.WALD == sensor_degradation() and ev.WALD.decimation == "point"  # SceneWald validates with it too
    for s in (2, 3, 4):
        assert torch.equal(ev.WALD(x, s), sensor_degradation()(x, s))


def test_blocks_cover_every_pixel_once_including_partial_edge_blocks():
    ref = texture(2, 100, 70)
    x = noisy(ref, 0.01, 3)
    sse, n = ev.block_sse(x, ref, 32)
    assert sse.shape == (2, 4 * 3) and n.sum() == 100 * 70 and sorted(set(n.tolist())) == [4 * 6, 4 * 32, 32 * 6, 1024]
    assert sse.sum(1) == pytest.approx(((x - ref) ** 2).sum((1, 2)).numpy(), rel=1e-12)


def test_bootstrap_interval_contains_the_estimate_and_narrows_with_more_blocks():
    ref = texture(1, 256, 256, seed=4)
    ramp = torch.linspace(0.002, 0.02, 256, dtype=torch.float64)[None, :, None]  # error varies across the window
    sr, bic = ref + ramp * torch.randn(ref.shape, generator=torch.Generator().manual_seed(5), dtype=ref.dtype), \
        noisy(ref, 0.012, 6)
    widths = {}
    for side in (64, 256):  # 4 and 64 blocks of 32 x 32
        crop = (slice(None), slice(0, side), slice(0, side))
        res = ev.compare(sr[crop], {"bicubic": bic[crop]}, ref[crop], ref[crop][:, ::4, ::4], scale=4, scene="s",
                         opensr=False, with_ssim=False)
        row = res.rows[0]
        assert row.n_blocks == (side // 32) ** 2
        assert row.model.psnr_ci[0] < row.model.psnr < row.model.psnr_ci[1]
        gain, (lo, hi) = row.gains["bicubic"]
        assert lo < gain < hi
        widths[side] = row.model.psnr_ci[1] - row.model.psnr_ci[0]
    assert widths[256] < 0.5 * widths[64]
    again = ev.compare(sr, {"bicubic": bic}, ref, ref[:, ::4, ::4], scale=4, scene="s", opensr=False,
                       with_ssim=False)
    assert again.rows[0].model.psnr_ci == res.rows[0].model.psnr_ci  # seeded


def test_paired_gain_of_a_model_identical_to_bicubic_is_zero_and_pairing_narrows_gains():
    ref = texture(3, 128, 128, seed=7)
    bic = noisy(ref, 0.01, 8)
    res = ev.compare(bic.clone(), {"bicubic": bic}, ref, ref[:, ::2, ::2], scale=2, scene="same", opensr=False,
                     with_ssim=False)
    for row in res.rows:
        assert row.gains["bicubic"] == (0.0, (0.0, 0.0))
        assert row.model.psnr_ci[1] - row.model.psnr_ci[0] > 0.05  # PSNR itself is uncertain; the paired gain not
    close = ev.compare(noisy(bic, 0.001, 9), {"bicubic": bic}, ref, ref[:, ::2, ::2], scale=2, scene="close",
                       opensr=False, with_ssim=False).rows[0]
    gain_width = close.gains["bicubic"][1][1] - close.gains["bicubic"][1][0]
    assert gain_width < 0.2 * (close.model.psnr_ci[1] - close.model.psnr_ci[0])


# --- opensr-test metrics on constructed cases --------------------------------------------------------------


def test_opensr_identical_sr_and_hr_has_no_hallucination():
    hr = texture(3, 128, 128, seed=10)
    lr = ev.downsample_antialias(hr, 4)
    c = ev.correctness(lr, hr, hr, 4)
    assert c["pixels"] > 0.2 * 96 * 96
    assert (c["hallucination_pct"], c["omission_pct"], c["improvement_pct"]) == (0.0, 0.0, 100.0)
    soft = ev.correctness(lr, hr, hr, 4, norm="softmin")
    assert soft["improvement_pct"] > 90 and soft["hallucination_pct"] < 5


def test_opensr_sr_equal_to_lr_upsampled_is_consistent_and_improves_nothing():
    hr = texture(3, 128, 128, seed=11)
    lr = ev.downsample_antialias(hr, 4)
    c = ev.correctness(lr, ev.upsample_bilinear(lr, 4), hr, 4)
    assert (c["improvement_pct"], c["omission_pct"], c["hallucination_pct"]) == (0.0, 100.0, 0.0)
    noise = ev.correctness(lr, noisy(hr, 0.03, 12), hr, 4)
    assert noise["hallucination_pct"] > 20  # invented texture is told apart
    # a reflectance ramp: bilinear up then antialiased down gives the LR back exactly (inside the border)
    yy, xx = torch.meshgrid(torch.arange(32.0, dtype=torch.float64), torch.arange(32.0, dtype=torch.float64),
                            indexing="ij")
    ramp = torch.stack([0.1 + 0.002 * xx + 0.001 * yy, 0.2 - 0.001 * xx + 0.003 * yy, 0.15 + 0.0005 * xx])
    cons = ev.consistency(ramp, ev.upsample_bilinear(ramp, 4), 4)
    assert max(cons["reflectance_l1"]) < 1e-12 and cons["spectral_deg"] < 1e-3 and cons["spatial_px_all"] < 0.02
    biased = ev.consistency(ramp, ev.upsample_bilinear(ramp, 4) * 1.1, 4)  # SR that brightens by 10 %
    assert min(biased["reflectance_l1"]) > 0.009 and biased["spectral_deg"] < 1e-3  # reflectance, not spectrum


def test_opensr_spatial_metric_finds_a_known_subpixel_shift():
    hr = texture(3, 256, 256, seed=13)
    lr = ev.downsample_antialias(hr, 4)
    assert ev.consistency(lr, hr, 4)["spatial_px_all"] < 0.05
    for dy, dx in ((0.3, -0.45), (0.5, 0.0), (-0.2, 0.15)):  # LR pixels
        sr = fourier_shift(hr, 4 * dy, 4 * dx)
        cons = ev.consistency(lr, sr, 4)
        assert cons["spatial_px_all"] == pytest.approx(math.hypot(dy, dx), abs=0.1)
        assert all(abs(s - math.hypot(dy, dx)) < 0.1 for s in cons["spatial_px"])
        got = ev.phase_shift(lr[0], ev.downsample_antialias(sr, 4)[0])
        assert got == pytest.approx((dy, dx), abs=0.1)


# --- robustness, splits -------------------------------------------------------------------------------


def test_robustness_table_has_a_row_per_degradation():
    data = ev.SceneData("synthetic", texture(2, 96, 96, seed=14).float().numpy(), ("a", "b"))
    # x4: at x2, point sampling at the 2 x 2 block centre (linear interpolation) is the block mean: area
    table = ev.robustness_table(models.build("bilinear", scale=4), [data], 4, bootstrap=ev.Bootstrap(resamples=200))
    assert len(table) == len(ROBUSTNESS) == 12
    assert [r["label"] for r in table] == [d.label for d in ROBUSTNESS] and len({r["label"] for r in table}) == 12
    for r in table:
        assert r["n"] == 2 and r["mean_gain_ci"][0] <= r["mean_gain"] <= r["mean_gain_ci"][1]
    assert len({round(r["mean_gain"], 4) for r in table}) == 12  # the degradations differ
    md = ev.robustness_markdown(table)
    assert md.count("\n") == 13 and "gauss 0.65s + area + noise 0.001" in md
    same = ev.robustness_table(models.build("bicubic", scale=4), [data], 4, bootstrap=ev.Bootstrap(resamples=200))
    assert all(r["mean_gain"] == 0.0 and r["mean_gain_ci"] == [0.0, 0.0] for r in same)


def test_splits_are_disjoint_by_place_and_every_scene_is_in_exactly_one_split_per_task():
    for task in ("s2-10m", "s2-20m", "probav"):
        by_split = {split: ev.split_scenes(task, split) for split in ("train", "validation", "test")}
        assert all(by_split.values()), task
        places = {split: {s.place for s in chosen} for split, chosen in by_split.items()}
        folders = {split: {s.folder for s in chosen} for split, chosen in by_split.items()}
        for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
            assert not places[a] & places[b] and not folders[a] & folders[b], (task, a, b)
        names = Counter(s.name for chosen in by_split.values() for s in chosen)
        assert set(names.values()) == {1} and set(names) == {s.name for s in SCENES if s.task == task}
    with pytest.raises(ValueError, match="split must be"):
        ev.split_scenes("s2-10m", "training")
    with pytest.raises(ValueError, match="unknown task"):
        ev.split_scenes("s2-60m", "test")
    # PROBA-V: the split helpers accept the task; its multi-frame evaluation is not implemented: skipped, with why
    res = ev.evaluate_split(models.build("bicubic", scale=3), "probav", "test", robustness=False)
    assert not res.results and [n for n, _ in res.skipped] == [s.name for s in scenes("probav", "test")]
    assert all("PROBA-V" in why for _, why in res.skipped) and res.summary["n"] == 0


# --- the Wald protocol on real scenes ---------------------------------------------------------------------


def test_evaluate_wald_on_a_real_crop_bicubic_gains_nothing_and_the_reference_gains_a_lot():
    shared_path("sentinel2_l1c_T49JGM_dsen2")
    torch.set_num_threads(2)
    data = ev.scene_data(scenes("s2-10m", "test")[0], multiple=4, crop=(64, 64, 128))
    assert data.reference.shape == (4, 128, 128) and data.bands == ("B02", "B03", "B04", "B08")
    same = ev.evaluate_wald(models.build("bicubic", scale=4), data, 4)
    assert [r.band for r in same.rows] == list(data.bands) and same.degradation == ev.WALD.label
    for r in same.rows:
        assert r.gains["bicubic"] == (0.0, (0.0, 0.0)) and r.peak == pytest.approx(float(data.reference[
            list(data.bands).index(r.band)].max()))
        assert r.model.psnr_ci[0] < r.model.psnr < r.model.psnr_ci[1] and r.model.psnr < 45
        assert r.opensr["omission_pct"] > 80  # bicubic adds no detail
    better = ev.evaluate_wald(Oracle(torch.from_numpy(data.reference), 4), data, 4)
    for r in better.rows:
        gain, (lo, hi) = r.gains["bicubic"]
        assert gain > 20 and 15 < lo < gain < hi and r.opensr["improvement_pct"] > 90


def test_band_sharpeners_are_scored_with_the_low_guide_wald_variant():
    shared_path("sentinel2_l1c_T49JGM_dsen2")
    torch.set_num_threads(2)
    data = ev.scene_data(scenes("s2-20m", "test")[0], multiple=2, crop=(0, 0, 96))
    assert data.reference.shape == (6, 96, 96) and data.guide is not None and data.guide.shape == (4, 192, 192)
    res = ev.evaluate_wald(models.build("hpf", scale=2), data, 2)
    assert [r.band for r in res.rows] == ["B05", "B06", "B07", "B8A", "B11", "B12"]
    for r in res.rows:
        assert set(r.baselines) == {"bicubic", "hpf"} and r.gains["hpf"] == (0.0, (0.0, 0.0))
    assert ev.summarize([res])["mean_gain"] > 0  # the guide helps on this crop
    with pytest.raises(ev.IncompatibleSceneError, match="guide"):  # sharpeners need the guide of s2-20m
        ev.evaluate_wald(models.build("hpf", scale=2), ev.scene_data(scenes("s2-10m", "test")[0], multiple=2,
                                                                      crop=(0, 0, 64)), 2)


def test_cli_evaluates_a_split_and_keeps_the_image_mode(tmp_path):
    shared_path("sentinel2_l2a_cog_S2A_29RKH_20200219")
    res = runner.invoke(app, ["evaluate", "--model", "bicubic", "--scale", "4", "--split", "validation", "--task",
                              "s2-10m", "--max-side", "64", "--out", str(tmp_path / "val.json")],
                        env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "val.json").read_text())
    assert [s["name"] for s in doc["scenes"]] == ["29RKH"] and doc["skipped"] == []
    assert len(doc["rows"]) == 4 and len(doc["robustness"]) == 12 and doc["peak_convention"] == ev.PEAK_CONVENTION
    assert doc["degradation"]["label"] == ev.WALD.label and doc["summary"]["mean_gain"] == 0.0
    assert "| 29RKH | B08 |" in res.output and "gauss 0.35s + point + noise 0.001" in res.output
    res = runner.invoke(app, ["evaluate", "--model", "bicubic", "--split", "test", "--task", "s2-10m", "--report"])
    assert res.exit_code == 2 and "needs weights" in " ".join(res.output.split())
    res = runner.invoke(app, ["evaluate", "--model", "bicubic", "--split", "validation"])
    assert res.exit_code == 2 and "--task" in res.output
    res = runner.invoke(app, ["evaluate", "--model", "bicubic", "--split", "train", "--task", "s2-10m"])
    assert res.exit_code == 2 and "validation" in res.output


# --- the test report next to the weights, the card, the README table ---------------------------------------


def _synthetic_report(weights: Path) -> dict:
    """A test report made by the module's own code on synthetic data, for weights at ``weights``."""
    meta = models.weights.read_meta(weights)
    ref = texture(2, 64, 64, seed=20)
    data = ev.SceneData("SYN01", ref.float().numpy(), ("B04", "B08"), window=(0, 0, 64, 64), place="Nowhere")
    res = ev.evaluate_wald(models.build("bilinear", scale=2), data, 2)
    split = ev.SplitResult(meta.name, "s2-10m", "test", 2, ev.WALD, ev.Bootstrap(), (res,), (),
                           ev.summarize([res]), None,
                           ev.robustness_table(models.build("bilinear", scale=2), [data], 2,
                                               bootstrap=ev.Bootstrap(resamples=100)))
    doc = {"format": ev.REPORT_FORMAT, "weights": meta.name, "weights_sha256": meta.sha256,
           "architecture": meta.architecture, **split.to_json(), "created": "2026-01-01T00:00:00+00:00"}
    ev.report_path(weights).write_text(json.dumps(doc))
    return doc


def test_cards_and_the_readme_table_are_generated_from_test_reports(tmp_path):
    readme = (REPO / "README.md").read_text()
    assert card.test_table_markdown() in readme, STALE
    assert card.test_table_markdown(tmp_path).count("\n") == 1  # no report: header only
    models.save_weights(models.build("elsr", scale=2), tmp_path / "tiny", trained=True,
                        training={"sensors": ["sentinel-2"], "data": "none"})
    doc = _synthetic_report(tmp_path / "tiny.safetensors")
    assert ev.report_path(tmp_path / "tiny.safetensors") == tmp_path / "tiny.test.json"
    table = card.test_table_markdown(tmp_path)
    s = doc["summary"]
    row = table.splitlines()[2]
    assert row.startswith("| `tiny` | s2-10m | SYN01 |") and f"{s['mean_gain']:+.2f}" in row
    assert f"[{s['mean_gain_ci'][0]:+.2f}, {s['mean_gain_ci'][1]:+.2f}]" in row
    path = card.write_card(tmp_path / "tiny.safetensors", ["synthetic"])
    text = path.read_text()
    assert "## Test split" in text and "SYN01 (Nowhere)" in text and ev.PEAK_CONVENTION in text
    assert ev.rows_markdown(doc["rows"]) in text and ev.robustness_markdown(doc["robustness"]) in text
    with pytest.raises(FileExistsError, match="reported once"):  # the test split is reported once per weights
        ev.write_test_report(tmp_path / "tiny.safetensors", "s2-10m")
    stale = {**doc, "weights_sha256": "0" * 64}
    ev.report_path(tmp_path / "tiny").write_text(json.dumps(stale))
    with pytest.raises(ValueError, match="other weights"):
        card.test_table_markdown(tmp_path)


def test_write_test_report_on_the_real_test_split(tmp_path):
    shared_path("sentinel2_l1c_T49JGM_dsen2")
    torch.set_num_threads(2)
    models.save_weights(models.build("elsr", scale=4), tmp_path / "tiny4", trained=True,
                        training={"sensors": ["sentinel-2"], "data": "none"})
    path = ev.write_test_report(tmp_path / "tiny4.safetensors", "s2-10m", max_side=64,
                                bootstrap=ev.Bootstrap(resamples=200))
    doc = json.loads(path.read_text())
    assert path.name == "tiny4.test.json"
    assert doc["weights_sha256"] == models.weights.read_meta(tmp_path / "tiny4.json").sha256
    assert [s["name"] for s in doc["scenes"]] == ["T49JGM"] and doc["split"] == "test"
    assert len(doc["rows"]) == 4 and len(doc["robustness"]) == 12 and doc["srcube_version"]
    assert doc["peak_convention"] == ev.PEAK_CONVENTION and doc["degradation"]["decimation"] == "point"
    assert all(r["peak"] < 1 and r["psnr_ci"][0] <= r["psnr"] <= r["psnr_ci"][1] for r in doc["rows"])
    assert "| `tiny4` | s2-10m | T49JGM |" in card.test_table_markdown(tmp_path)


def test_projected_evaluation_adds_the_projection_baseline():
    """As deployed, a learned model's output goes through the consistency projection; its context baseline is
    bicubic made consistent the same way (so bicubic evaluated as a "projected model" gains exactly 0 over it)."""
    data = ev.SceneData("synthetic", texture(2, 96, 96, seed=31).float().numpy(), ("a", "b"))
    res = ev.evaluate_wald(models.build("bicubic", scale=4), data, 4, bootstrap=ev.Bootstrap(resamples=100),
                           opensr=False, with_ssim=False, project=True)
    for row in res.rows:
        assert set(row.gains) == {"bicubic", "bicubic+projection"}
        assert abs(row.gains["bicubic+projection"][0]) < 1e-6
        assert row.gains["bicubic"][0] > 0  # the projection restores what the PSF took (data consistency)


def test_probav_multi_frame_wald_uses_the_kelvins_metric():
    """An untrained HighRes-net (residual: bicubic of the clear median) gains exactly nothing over the median
    baseline; the Kelvins baseline (bicubic of the mean) is scored by cPSNR; intervals resample targets."""
    from srcube.training.datasets.scenes import scenes

    scene = scenes("probav", "test")[0]
    shared_path(*scene.folder.split("/"))
    net = models.build("highresnet", scale=3, features=8, n_views=8).eval()
    out = ev.evaluate_probav(net, scene, bootstrap=ev.Bootstrap(resamples=200), max_targets=3)
    assert out["targets"] == 3 and out["size"] == 126 and len(out["rows"]) == 3
    assert abs(out["gain_over_median"]) < 1e-9 and out["gain_over_median_ci"] == [0.0, 0.0]
    assert out["gain_ci"][0] <= out["gain"] <= out["gain_ci"][1]
    assert out["wald_kelvins_score"] == pytest.approx(
        sum(r["cpsnr_kelvins-baseline"] / r["cpsnr_model"] for r in out["rows"]) / 3)
