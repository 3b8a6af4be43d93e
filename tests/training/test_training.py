"""Training: dataset readers on their layouts (generated fixtures and real data), the trainer
(every data kind, GAN, resume), the CLI, and the choice of the default model."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from srcube import models
from srcube.cli.commands import app
from srcube.pipeline.testing.sample_probav import write_kelvins
from srcube.training.config import ConfigError, parse_config
from srcube.training.datasets import (
    KelvinsDataset,
    Sen2VenusDataset,
    WaldMultiFrame,
    WaldPairs,
    WorldStratDataset,
    read_image,
    split_windows,
)
from srcube.training.datasets.fixtures import write_sen2venus, write_worldstrat
from srcube.training.datasets.sen2venus import read_index
from srcube.training.datasets.worldstrat import read_split
from srcube.training.trainer import Trainer
from tests.support.helpers import shared_path

runner = CliRunner()


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    return {"kelvins": write_kelvins(root / "probav_data"), "sen2venus": write_sen2venus(root / "sen2venus"),
            "worldstrat": write_worldstrat(root / "worldstrat")}


# --- readers -----------------------------------------------------------------------------------


def test_wald_pairs_keep_train_and_validation_apart(sample_dir):
    image = read_image(sample_dir / "cogs" / "T31UFS-A_20240612" / "B08.tif")
    assert image.data.shape == (1, 512, 512) and image.data.dtype == np.float32 and 0.1 < image.data.mean() < 0.6
    train_w, val_w = split_windows(0.75, 0.05)
    train = WaldPairs([image], 4, 32, 64, seed=0, window=train_w)
    val = WaldPairs([image], 4, 32, 16, window=val_w, fixed=True)
    assert max(r + 32 for _, r, _, _ in train.candidates) <= 0.75 * 512
    assert min(r for _, r, _, _ in val.candidates) >= int(0.8 * 512)
    lr, hr = train[0]
    assert lr.shape == (1, 8, 8) and hr.shape == (1, 32, 32)
    with pytest.raises(ValueError, match="multiple of the scale"):
        WaldPairs([image], 3, 32, 4)


def test_wald_on_the_real_10m_crop_skips_the_swath_edge():
    image = read_image(shared_path("sentinel2_l1c_T33UUU_pair", "ref_S2A_20160608T153121_T33UUU_north.tif"))
    assert image.data.shape == (1, 2000, 2400) and (~image.valid).mean() > 0.05  # no data west of the swath
    pairs = WaldPairs([image], 2, 64, 32, seed=1)
    assert all(image.valid[r : r + 64, c : c + 64].all() for _, r, c, _ in pairs.candidates)


def test_multi_frame_wald_on_real_probav_frames():
    from srcube.pipeline.sensors.probav import read_imgset

    im = read_imgset(shared_path("probav_kelvins", "lr_only_scenes", "scene_a"), require_qm=False)
    ds = WaldMultiFrame([im.lr / 65535.0], None, scale=3, n_views=8, patch=48, length=5)
    s = ds[0]
    assert s["views"].shape == (8, 1, 16, 16) and s["hr"].shape == (1, 48, 48)
    assert s["present"].sum() == 8  # 9 frames: one is the target, 8 are views


def test_kelvins_dataset(fixtures):
    ds = KelvinsDataset(fixtures["kelvins"], "train", "NIR", n_views=12, min_L=11)
    s = ds[0]
    im = ds.imgset(0)
    assert s["views"].shape == (12, 1, 128, 128) and s["hr"].shape == (1, 384, 384)
    assert float(s["norm"]) == pytest.approx(im.norm)
    n = len(im.frame_ids)
    assert int(s["present"].sum()) == max(min(n, 12), 11)
    order = im.clearest(12)
    assert torch.allclose(s["views"][0, 0], torch.from_numpy(im.lr[order[0]] / 65535.0).float())
    assert KelvinsDataset(fixtures["kelvins"], "train", patch=32)[0]["hr"].shape == (1, 96, 96)
    with pytest.raises(ValueError, match=r"HR\.png"):
        KelvinsDataset(fixtures["kelvins"], "test")[0]


def test_sen2venus_reader_follows_the_index_columns(fixtures):
    sites = sorted(p for p in fixtures["sen2venus"].iterdir() if p.is_dir())
    row = read_index(sites[0])[0]
    assert row["tensor_20m_b5b6b7b8a"].endswith("_20m_b4b5b6b8a.pt")  # the naming quirk of the real data
    x2 = Sen2VenusDataset(sites, "10m")
    lr, hr = x2[0]
    assert lr.shape == (4, 128, 128) and hr.shape == (4, 256, 256) and x2.scale == 2
    x4 = Sen2VenusDataset(sites, "20m", band_agnostic=True)
    lr, hr = x4[5]
    assert lr.shape == (1, 64, 64) and hr.shape == (1, 256, 256) and len(x4) == 4 * len(x2)
    assert 0.0 < float(hr.mean()) < 0.5  # reflectance x 10000 divided back


def test_worldstrat_reader(fixtures):
    root = fixtures["worldstrat"]
    ds = WorldStratDataset(root, root / "stratified_train_val_test_split.csv", "train", revisits=8,
                           input_size=None, output_size=None)
    s = ds[0]
    assert s["views"].shape == (8, 4, 40, 40) and s["hr"].shape == (4, 264, 264)
    assert s["present"].tolist() == [True] * 4 + [False] * 4  # the fixture's 4 revisits, padded to 8
    assert s["masks"].max() <= 1 and float(s["masks"][4:].sum()) == 0 and float(s["views"][4:].abs().sum()) == 0
    assert 0 < float(s["hr"].mean()) < 1


def test_worldstrat_aois_with_different_revisit_counts_batch_together(tmp_path):
    from torch.utils.data import DataLoader

    root = write_worldstrat(tmp_path / "ws")
    ds = WorldStratDataset(root, root / "stratified_train_val_test_split.csv", "train", revisits=4,
                           input_size=None, output_size=None)
    aoi = ds.aois[0]
    for path in (root / "lr_dataset" / aoi / "L2A").glob(f"{aoi}-4-*"):
        path.unlink()  # this AOI has 3 revisits, the others 4
    batch = next(iter(DataLoader(ds, batch_size=len(ds))))
    assert batch["views"].shape[:2] == (len(ds), 4)
    assert batch["present"][0].tolist() == [True, True, True, False] and bool(batch["present"][1:].all())


def test_official_worldstrat_split():
    path = shared_path("worldstrat", "stratified_train_val_test_split.csv")
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3928
    split = read_split(path)
    counts = {k: list(split.values()).count(k) for k in ("train", "val", "test", "conflict")}
    # 3890 distinct AOIs; 11 are listed in two splits and are kept out of all of them
    assert len(split) == 3890 and counts["conflict"] == 11 and sum(counts.values()) == 3890


# --- trainer -----------------------------------------------------------------------------------


def _cfg(tmp_path, **over):
    raw = {"name": "t", "output": str(tmp_path / "run"), "model": {"architecture": "elsr", "scale": 2},
           "data": {"kind": "wald", "sources": [], "patch": 32, "train_samples": 16, "val_samples": 4},
           "train": {"epochs": 1, "batch_size": 4, "loss": {"l1": 1.0, "ssim": 0.1}}}
    for key, value in over.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return parse_config(raw)


def test_config_errors(tmp_path, sample_dir):
    src = str(sample_dir / "cogs" / "T31UFS-A_20240612" / "B04.tif")
    with pytest.raises(ConfigError, match="unknown key"):
        _cfg(tmp_path, data={"sources": [src], "pach": 3})
    with pytest.raises(ConfigError, match="not registered"):
        _cfg(tmp_path, data={"sources": [src]}, model={"architecture": "edsr"})
    with pytest.raises(ConfigError, match=r"multi-frame but data\.kind 'wald'"):
        _cfg(tmp_path, data={"sources": [src]}, model={"architecture": "highresnet"})
    with pytest.raises(ConfigError, match="does not exist"):
        _cfg(tmp_path, data={"sources": ["/nope.tif"]})
    with pytest.raises(ConfigError, match=r"train\.loss"):
        _cfg(tmp_path, data={"sources": [src]}, train={"loss": {"perceptual": 1.0}})


def test_wald_training_runs_resumes_and_exports(tmp_path, sample_dir):
    src = str(sample_dir / "cogs" / "T31UFS-A_20240612" / "B04.tif")
    cfg = _cfg(tmp_path, data={"sources": [src]}, train={"ema": 0.9})
    first = Trainer(cfg).fit()
    assert first["epochs"] == 1 and (tmp_path / "run" / "checkpoints" / "last.pt").exists()
    cfg2 = _cfg(tmp_path, data={"sources": [src]}, train={"ema": 0.9, "epochs": 2})
    trainer = Trainer(cfg2, resume=True)
    assert trainer.epoch == 1 and trainer.step == first["steps"]
    second = trainer.fit()
    assert second["epochs"] == 2 and [r["epoch"] for r in second["history"]] == [1, 2]
    with open(tmp_path / "run" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and float(rows[-1]["psnr_bicubic"]) > 0
    assert any((tmp_path / "run" / "tb").iterdir())  # TensorBoard events
    meta = trainer.export(tmp_path / "w")
    assert meta.trained and "psnr" in meta.metrics and "psnr_bicubic" in meta.metrics
    assert meta.training["recipe"]["model"]["architecture"] == "elsr"
    assert models.load_model(str(tmp_path / "w.safetensors")).scale == 2


def test_srcube_train_resume_continues_as_if_never_stopped(tmp_path, sample_dir):
    """`srcube train --epochs 1` then `--resume --epochs 2` ends with the weights of one 2-epoch run."""
    import yaml

    src = str(sample_dir / "cogs" / "T31UFS-A_20240612" / "B04.tif")

    def config(name: str) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({
            "name": name, "output": str(tmp_path / name), "model": {"architecture": "elsr", "scale": 2},
            "data": {"kind": "wald", "sources": [src], "patch": 32, "train_samples": 24, "val_samples": 4},
            "train": {"epochs": 2, "batch_size": 4, "loss": {"l1": 1.0}, "scheduler": "constant", "ema": 0.9}}))
        return path

    runner = CliRunner()
    assert runner.invoke(app, ["train", str(config("whole"))]).exit_code == 0
    res = runner.invoke(app, ["train", str(config("split")), "--epochs", "1"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["train", str(config("split")), "--resume", "--epochs", "2"])
    assert res.exit_code == 0, res.output
    whole = torch.load(tmp_path / "whole" / "checkpoints" / "last.pt", weights_only=True)  # tensors, plain values
    split = torch.load(tmp_path / "split" / "checkpoints" / "last.pt", weights_only=True)
    assert whole["epoch"] == split["epoch"] == 2 and whole["step"] == split["step"]
    for key, value in whole["model"].items():
        torch.testing.assert_close(split["model"][key], value, rtol=0, atol=0, msg=key)
    assert [r["psnr"] for r in split["history"]] == [r["psnr"] for r in whole["history"]]


class _Planted:
    """What a crafted checkpoint unpickles into: a call of the attacker's choice (here: creating a file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_crafted_checkpoint_is_refused_not_unpickled(tmp_path, sample_dir):
    """Checkpoints are read with torch.load(weights_only=True): a pickle that would run code when loaded is a
    CheckpointError on --resume (exit 2 from the CLI), and its code never runs."""
    import yaml

    from srcube.training.trainer import CheckpointError

    src = str(sample_dir / "cogs" / "T31UFS-A_20240612" / "B04.tif")
    cfg = _cfg(tmp_path, data={"sources": [src]})
    marker = tmp_path / "the-checkpoint-ran-code"
    cfg.out_dir.joinpath("checkpoints").mkdir(parents=True)
    torch.save({"model": {}, "epoch": _Planted(marker)}, cfg.out_dir / "checkpoints" / "last.pt")
    with pytest.raises(CheckpointError, match=r"last\.pt holds objects other than tensors and plain values"):
        Trainer(cfg, resume=True)
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump({
        "name": "t", "output": str(cfg.out_dir), "model": {"architecture": "elsr", "scale": 2},
        "data": {"kind": "wald", "sources": [src], "patch": 32, "train_samples": 16, "val_samples": 4},
        "train": {"epochs": 1, "batch_size": 4}}))
    res = runner.invoke(app, ["train", str(path), "--resume"])
    assert res.exit_code == 2 and "does not unpickle" in " ".join(res.output.split()), res.output
    assert not marker.exists()


def test_resume_with_more_epochs_stretches_the_cosine_schedule(tmp_path, sample_dir):
    src = str(sample_dir / "cogs" / "T31UFS-A_20240612" / "B04.tif")
    Trainer(_cfg(tmp_path, data={"sources": [src]}, train={"scheduler": "cosine"})).fit()
    longer = Trainer(_cfg(tmp_path, data={"sources": [src]}, train={"scheduler": "cosine", "epochs": 3}), resume=True)
    total = 3 * longer._steps_per_epoch()
    lr0 = longer.cfg.train.lr
    # the learning rate now follows the cosine over the new total, from where the run stopped
    expected = lr0 * (1 / 50 + (1 - 1 / 50) * 0.5 * (1 + math.cos(math.pi * longer.step / total)))
    assert longer.step > 0 and longer.opt.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("kind", ["kelvins", "kelvins-selfsup", "sen2venus", "worldstrat", "wald-multiframe", "gan"])
def test_every_recipe_kind_runs_one_step(tmp_path, fixtures, kind, sample_dir):
    mf = {"architecture": "highresnet", "config": {"features": 8, "n_views": 4}}
    if kind == "kelvins":
        cfg = _cfg(tmp_path, model={**mf, "scale": 3},
                   data={"kind": "kelvins", "sources": [str(fixtures["kelvins"])], "n_views": 4, "patch": 32},
                   train={"loss": {"cmse": 1.0}, "max_steps_per_epoch": 1})
    elif kind == "kelvins-selfsup":  # the HR pairs of the release and its LR frames predicting each other
        cfg = _cfg(tmp_path, model={**mf, "scale": 3},
                   data={"kind": "kelvins", "sources": [str(fixtures["kelvins"])], "n_views": 4, "patch": 32,
                         "selfsup_samples": 4, "val_samples": 2},
                   train={"loss": {"cmse": 1.0, "selfsup": 1.0}, "max_steps_per_epoch": 1})
    elif kind == "sen2venus":
        sites = sorted(str(p) for p in fixtures["sen2venus"].iterdir() if p.is_dir())
        cfg = _cfg(tmp_path, model={"architecture": "srcnn", "scale": 4, "config": {"features": [8, 4]}},
                   data={"kind": "sen2venus", "sources": sites, "band_agnostic": True},
                   train={"max_steps_per_epoch": 1})
    elif kind == "worldstrat":
        root = fixtures["worldstrat"]
        cfg = _cfg(tmp_path, model={**mf, "scale": 3, "config": {"features": 8, "n_views": 4, "channels": 4}},
                   data={"kind": "worldstrat", "sources": [str(root)], "n_views": 4, "patch": 16,
                         "split_csv": str(root / "stratified_train_val_test_split.csv")},
                   train={"loss": {"registered": 1.0}, "max_steps_per_epoch": 1})
    elif kind == "wald-multiframe":
        scenes = shared_path("probav_kelvins", "lr_only_scenes")
        cfg = _cfg(tmp_path, model={**mf, "scale": 3},
                   data={"kind": "wald-multiframe", "sources": [str(scenes / "scene_a")],
                         "val_sources": [str(scenes / "scene_b")], "patch": 24, "n_views": 4, "val_samples": 2},
                   train={"loss": {"cmse": 1.0}, "max_steps_per_epoch": 1})
    else:
        src = str(sample_dir / "cogs" / "T31UFS-A_20240612" / "B04.tif")
        cfg = _cfg(tmp_path, model={"architecture": "srgan", "scale": 2, "config": {"features": 8, "blocks": 1}},
                   data={"sources": [src]},
                   train={"loss": {"l1": 1.0, "adversarial": 0.01, "feature": 0.1}, "max_steps_per_epoch": 2})
    trainer = Trainer(cfg)
    history = trainer.fit()["history"]
    assert len(history) == 1 and np.isfinite(history[0]["train_loss"])
    if kind == "kelvins-selfsup":  # validated on the release's held-out imgsets' real frames too
        assert trainer.ss_train is not None and np.isfinite(history[0]["native_cpsnr"])
    if kind == "worldstrat":  # its HR imagery is CC BY-NC: the weights say so whatever the config's licence
        meta = trainer.export(tmp_path / "ws")
        assert "CC BY-NC" in meta.licence and "non-commercial" in meta.training["licence"]


# --- CLI and the default model -------------------------------------------------------------------


def test_cli_train_and_evaluate(tmp_path, sample_dir):
    src = sample_dir / "cogs" / "T31UFS-A_20240612" / "B04.tif"
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({
        "name": "cli", "output": str(tmp_path / "run"), "model": {"architecture": "elsr", "scale": 2},
        "data": {"kind": "wald", "sources": [str(src)], "patch": 32, "train_samples": 8, "val_samples": 4},
        "train": {"epochs": 1, "batch_size": 4}}))
    res = runner.invoke(app, ["train", str(config), "--export", str(tmp_path / "w")], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "psnr" in res.output and (tmp_path / "w.safetensors").exists()
    res = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "w.safetensors"), "--image", str(src),
                              "--wald", "2", "--out", str(tmp_path / "eval")], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "Wald x2" in res.output and "peak = max of the reference band" in res.output  # not a peak of 1.0
    assert list((tmp_path / "eval").glob("*.png")) and (tmp_path / "eval" / "metrics.json").exists()
    wald = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert all(r["peak"] < 1 and r["psnr_ci"][0] <= r["psnr"] <= r["psnr_ci"][1] for r in wald["rows"])
    res = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "w.safetensors"), "--data", str(config),
                              "--out", str(tmp_path / "eval2")], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "eval2").glob("sample-*.png"))) == 4
    res = runner.invoke(app, ["train", str(tmp_path / "missing.yaml")])
    assert res.exit_code == 2 and "does not exist" in " ".join(res.output.split())


def test_default_model_needs_a_test_split_win_over_bicubic(tmp_path, monkeypatch):
    """"auto" picks shipped weights only where their test-split report shows a gain over bicubic whose 95 %
    interval lies above zero (band-specific weights only for exactly their bands); among those, the larger
    validation gain wins: the test split gates, it never ranks."""
    import srcube.models.weights as mw

    monkeypatch.setattr(mw, "SHIPPED_DIR", tmp_path)
    assert models.default_model("sentinel-2", 4) == "bicubic"
    agnostic = models.build("lrnet", scale=4, features=4, blocks=1)
    xband = models.build("lrnet", scale=4, channels=4, bands=("B02", "B03", "B04", "B08"), features=4, blocks=1)
    # (name, net, test gain, its 95 % interval, validation gain)
    for name, net, gain, ci, val in (("worse", agnostic, -0.2, [-0.4, 0.0], 0.9),
                                     ("unsure", agnostic, 0.8, [-0.1, 1.7], 0.9),
                                     ("better", agnostic, 0.5, [0.2, 0.8], 0.3),
                                     ("test-best", agnostic, 2.0, [1.5, 2.5], 0.1),
                                     ("xband", xband, 1.5, [1.1, 1.9], 0.6),
                                     ("unreported", agnostic, None, None, 0.9)):
        meta = models.save_weights(net, tmp_path / name, trained=True, training={"sensors": ["sentinel-2"]},
                                   metrics={"psnr_gain": val})
        if gain is not None:
            (tmp_path / f"{name}.test.json").write_text(json.dumps(
                {"weights_sha256": meta.sha256, "summary": {"baseline": "bicubic", "mean_gain": gain,
                                                            "mean_gain_ci": ci}}))
    # "better" wins on validation over "test-best", whose larger test gain does not count
    assert models.default_model("sentinel-2", 4, bands=["B04", "B08"]) == "better"
    assert models.default_model("sentinel-2", 4, bands=["B02", "B03", "B04", "B08"]) == "xband"
    assert models.default_model("sentinel-2", 2) == "bicubic"  # no x2 weights
    assert models.default_model("proba-v", 4) == "bicubic"  # not meant for that sensor
    # a report of other weights (retrained since) does not count
    with torch.no_grad():
        xband.tail.bias += 0.01
    models.save_weights(xband, tmp_path / "xband", trained=True, training={"sensors": ["sentinel-2"]},
                        metrics={"psnr_gain": 0.6})
    assert models.default_model("sentinel-2", 4, bands=["B02", "B03", "B04", "B08"]) == "better"


def test_cards_say_how_validation_is_kept_apart_and_configs_refuse_overlap(tmp_path, sample_dir):
    from srcube.training.card import _separation

    assert _separation({"sources": ["a"], "val_sources": ["b"]}) == "other scenes than training"
    assert _separation({"sources": ["a"], "train_window": [0, 0.75, 0, 1], "val_window": [0.8, 1, 0, 1]}) == \
        "spatially separate area"
    assert _separation({"sources": ["a"], "train_window": [0, 0.9, 0, 1], "val_window": [0.8, 1, 0, 1]}) == \
        "NOT separate from the training area"
    src = str(sample_dir / "cogs" / "T31UFS-A_20240612" / "B04.tif")
    with pytest.raises(ConfigError, match="overlap"):
        _cfg(tmp_path, data={"sources": [src], "train_window": [0.0, 0.9, 0.0, 1.0], "val_window": [0.8, 1.0, 0, 1]})
    _cfg(tmp_path, data={"sources": [src], "train_window": [0.0, 1.0, 0.0, 0.7], "val_window": [0.0, 1.0, 0.7, 1]})
