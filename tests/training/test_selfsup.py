"""Self-supervised multi-frame training on real PROBA-V frames (training.datasets.real.SceneSelfSupervised,
training.losses.selfsup_loss) and the native-frame evaluation (training.evaluation.probav)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from srcube import models
from srcube.models.psf import sensor_degradation
from srcube.models.registration import phase_shift
from srcube.training.config import ConfigError
from srcube.training.config import validate as validate_config
from srcube.training.datasets.real import augment_shift
from srcube.training.losses import frame_errors, predict_frame, selfsup_loss
from tests.support.helpers import shared_path


def _scene(name: str):
    from srcube.training.datasets.scenes import SCENES

    scene = next(s for s in SCENES if s.name == name)
    shared_path(*scene.folder.split("/"))
    return scene


def _frames(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    from srcube.training.datasets.scenes import load_probav

    d = load_probav(_scene(name))
    return torch.from_numpy(d["frames"]).double(), torch.from_numpy(d["valid"])


def test_a_frame_is_predicted_on_its_own_measured_grid():
    """The sign of the sampling shift: the clearest frame of a real scene, upsampled and projected through the
    sensor on another frame's measured grid, predicts that frame better than on the reference grid or on the
    grid shifted the other way (imgset0000: most frames about 1 px apart)."""
    frames, valid = _frames("imgset0000")
    order = sorted(range(len(frames)), key=lambda j: -float(valid[j].float().mean()))
    ref = order[0]
    up = F.interpolate(frames[ref][None, None], scale_factor=3, mode="bicubic", align_corners=False)[0]
    sigma = sensor_degradation("proba-v").sigma
    clear = (valid & valid[ref]).float()[None, None]
    checked = 0
    for t in order[1:8]:
        dy, dx = phase_shift(frames[ref], frames[t], valid[ref], valid[t])
        if max(abs(dy), abs(dx)) < 0.5:
            continue
        errs = [float(frame_errors(up[None], frames[t][None, None], clear, torch.tensor([s]), 3, sigma)[0])
                for s in ((dy, dx), (0.0, 0.0), (-dy, -dx))]
        assert errs[0] < 0.8 * errs[1] < 0.8 * errs[2], (t, (dy, dx), errs)
        checked += 1
    assert checked >= 3


@pytest.mark.parametrize("turns", [0, 1, 2, 3])
@pytest.mark.parametrize("flip", [False, True])
def test_the_shift_turns_and_flips_with_the_frames(turns, flip):
    frames, _ = _frames("imgset0007")
    ref, mov = frames[0], frames[5]
    shift = phase_shift(ref, mov)

    def aug(x: torch.Tensor) -> torch.Tensor:
        x = torch.rot90(x, turns, dims=(-2, -1))
        return x.flip(-1) if flip else x

    assert max(abs(v) for v in shift) > 0.3  # a shift worth turning
    assert augment_shift(shift, turns, flip) == pytest.approx(phase_shift(aug(ref), aug(mov)), abs=0.06)


def test_the_selfsup_loss_is_zero_for_a_consistent_image_whatever_the_bias_and_learns():
    g = torch.Generator().manual_seed(0)
    hr = F.avg_pool2d(torch.rand(2, 1, 96, 96, generator=g), 3, 1, 1)
    shift = torch.tensor([[0.4, -0.7], [-1.1, 0.2]])
    sigma = sensor_degradation("proba-v").sigma
    target = torch.stack([predict_frame(hr[k], tuple(shift[k].tolist()), 3, sigma) for k in range(2)]) + 0.05
    clear = torch.ones_like(target)
    assert float(selfsup_loss(hr, target, clear, shift, 3, sigma)) < 1e-12  # a brightness bias costs nothing
    assert float(selfsup_loss(hr, target, clear, torch.zeros(2, 2), 3, sigma)) > 1e-5  # the wrong grid does
    clear[0, 0, 10:20, 10:20] = 0  # unclear pixels do not count, whatever they hold
    target[0, 0, 10:20, 10:20] = 1.0
    assert float(selfsup_loss(hr, target, clear, shift, 3, sigma)) < 1e-12
    cloud = target.clone()  # an unflagged cloud: trimmed out of the loss, not out of the untrimmed error
    cloud[1, 0, 4:9, 4:9] += 0.3
    assert float(selfsup_loss(hr, cloud, torch.ones_like(target), shift, 3, sigma)) < 1e-12
    assert float(frame_errors(hr, cloud, torch.ones_like(target), shift, 3, sigma)[1]) > 1e-3
    x = torch.zeros_like(hr, requires_grad=True)  # and it has a gradient to learn from
    opt = torch.optim.Adam([x], lr=0.02)
    first = None
    for _ in range(60):
        loss = selfsup_loss(x, target, clear, shift, 3, sigma)
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.2 * first


def test_selfsup_samples_are_registered_real_views_and_a_held_out_frame():
    from srcube.training.datasets.real import SceneSelfSupervised

    scene = _scene("imgset0010")
    val = SceneSelfSupervised([scene], 8, 0, 0, train=False)
    frames = val.frames[0]
    assert len(val) == frames.shape[0]  # every frame once the target
    b = val[3]
    assert b["views"].shape == (8, 1, 116, 116) and b["target"].shape == (1, 116, 116) and bool(b["present"].all())
    # the target is frame 3 itself, nothing degraded, and not among the views
    assert torch.equal(b["target"][0], torch.from_numpy(frames[3, 6:122, 6:122]))
    for v in b["views"][:, 0]:
        assert float((v - b["target"][0]).abs().max()) > 1e-4
    # the views line up with the reference (the first, the clearest) within a twentieth of a pixel
    ref = b["views"][0, 0].double()
    for j in range(1, 8):
        assert max(abs(s) for s in phase_shift(ref, b["views"][j, 0].double())) < 0.06
    # the target's shift is its measured shift against the reference view's grid
    assert b["target_shift"].tolist() == pytest.approx(list(phase_shift(ref, b["target"][0].double())), abs=0.1)
    train = SceneSelfSupervised([scene], 8, 24, 16, train=True, seed=1)
    train.set_epoch(2)
    s = train[5]
    assert s["views"].shape == (8, 1, 24, 24) and s["target"].shape == (1, 24, 24) and s["target_shift"].shape == (2,)
    assert torch.equal(train[5]["views"], s["views"])  # deterministic per epoch and index


def _probav_cfg(tmp_path, **data):
    from srcube.training.config import REPO, load_config

    cfg = load_config(REPO / "training" / "configs" / "probav-highresnet-x3-selfsup.yaml")
    return dataclasses.replace(
        cfg, output=str(tmp_path / "run"),
        model=dataclasses.replace(cfg.model, config={"features": 8, "encoder_blocks": 1, "n_views": 8}),
        data=dataclasses.replace(cfg.data, train_samples=8, val_samples=2, **data),
        train=dataclasses.replace(cfg.train, epochs=1, batch_size=4, warmup_steps=0))


def test_selfsup_needs_its_samples_and_its_loss_term(tmp_path):
    _scene("imgset0010")
    cfg = _probav_cfg(tmp_path)
    validate_config(cfg)
    with pytest.raises(ConfigError, match="go together"):
        validate_config(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, selfsup_samples=0)))
    with pytest.raises(ConfigError, match="go together"):
        validate_config(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, loss={"cmse": 1.0})))


def test_training_with_selfsup_fuses_both_batches_and_validates_on_real_frames(tmp_path):
    from srcube.training.trainer import Trainer

    _scene("imgset0010")
    trainer = Trainer(_probav_cfg(tmp_path, selfsup_samples=8))
    assert trainer.ss_train is not None and len(trainer.ss_train) == 8
    history = trainer.fit()["history"]
    row = history[0]
    assert np.isfinite(row["train_loss"]) and row["native_score"] > 0
    assert 30 < row["native_cpsnr"] < 70 and 30 < row["native_cpsnr_median"] < 70
    meta = trainer.export(tmp_path / "w")
    assert "native_score" in meta.metrics


def test_native_frame_evaluation_scores_real_frames_against_the_median():
    """An untrained HighRes-net is bicubic of the clear median (its residual starts at zero): its native cPSNR is
    the projected-bicubic baseline's exactly, and below the median moved onto the frame's grid (projecting an
    interpolated image through the PSF blurs it twice)."""
    from srcube.training.evaluation.probav import evaluate_probav_native
    from srcube.training.evaluation.stats import Bootstrap

    net = models.build("highresnet", scale=3, features=8, n_views=8).eval()
    out = evaluate_probav_native(net, _scene("scene_b"), bootstrap=Bootstrap(resamples=200))
    assert out["targets"] == 9 and len(out["rows"]) == 9
    assert out["gain_over_bicubic"] == pytest.approx(0.0, abs=1e-6)
    assert out["gain"] < 0 and out["native_score"] > 1.0
    assert out["gain_ci"][0] <= out["gain"] <= out["gain_ci"][1]
