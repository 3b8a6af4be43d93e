"""Metrics against values computed by hand; losses' invariances (the Wald degradation: test_degrade.py)."""

import math

import numpy as np
import pytest
import torch

from srcube.models.interp import lanczos_shift
from srcube.models.psf import gaussian_blur
from srcube.models.sisr import Discriminator
from srcube.training import losses
from srcube.training.metrics import cpsnr, cssim, ergas, hf_energy_ratio, kelvins_score, metric_table, psnr, sam, ssim


def test_psnr_by_hand():
    assert psnr(np.zeros((4, 4)), np.full((4, 4), 0.1)) == pytest.approx(20.0)  # mse 0.01
    assert psnr(np.zeros((2, 2)), np.array([[0.2, 0.0], [0.0, 0.0]])) == pytest.approx(10 * math.log10(1 / 0.01))
    assert psnr(np.ones(3), np.ones(3)) == float("inf")


def test_ssim_of_constant_images_by_hand():
    a, b = 0.5, 0.4
    c1 = 0.01**2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)  # variances are zero: the structure term is 1
    assert ssim(np.full((16, 16), a), np.full((16, 16), b)) == pytest.approx(expected, rel=1e-6)
    img = np.random.default_rng(0).random((24, 24))
    assert ssim(img, img) == pytest.approx(1.0)


def _cpsnr_by_hand(sr, hr, clear, border):
    """A plain-loop reimplementation of the Kelvins formula."""
    h, w = sr.shape
    crop = sr[border : h - border, border : w - border]
    best = -np.inf
    for u in range(2 * border + 1):
        for v in range(2 * border + 1):
            hh = hr[u : u + crop.shape[0], v : v + crop.shape[1]]
            cc = clear[u : u + crop.shape[0], v : v + crop.shape[1]]
            diffs = [hh[i, j] - crop[i, j] for i in range(crop.shape[0]) for j in range(crop.shape[1]) if cc[i, j]]
            b = sum(diffs) / len(diffs)
            cmse = sum((d - b) ** 2 for d in diffs) / len(diffs)
            best = max(best, -10 * math.log10(cmse))
    return best


def test_cpsnr_matches_the_formula_by_hand():
    rng = np.random.default_rng(1)
    hr = rng.random((12, 12))
    clear = rng.random((12, 12)) > 0.2
    sr = np.roll(hr, (1, -1), axis=(0, 1)) + 0.07 + rng.normal(0, 0.01, (12, 12))
    assert cpsnr(sr, hr, clear, border=2) == pytest.approx(_cpsnr_by_hand(sr, hr, clear, 2), rel=1e-9)
    # known value: a zero-mean +-e checkerboard error at the right shift gives cMSE = e^2
    e = 0.01
    board = np.indices((12, 12)).sum(0) % 2 * 2 - 1.0
    sr2 = hr + 0.2 + e * board  # brightness bias 0.2, removed by cPSNR
    assert cpsnr(sr2, hr, None, border=2) == pytest.approx(-10 * math.log10(e * e), abs=0.05)
    assert kelvins_score(sr2, hr, None, norm=45.0) == pytest.approx(45.0 / cpsnr(sr2, hr, None, border=3))


def test_cssim_finds_the_shift_and_removes_the_bias():
    hr = torch.rand(20, 20, generator=torch.Generator().manual_seed(2))
    sr = torch.roll(hr, shifts=(2, 1), dims=(0, 1)) + 0.1
    assert cssim(sr, hr, None, border=3) == pytest.approx(1.0, abs=1e-6)
    assert ssim(sr, hr) < 0.5


def test_sam_ergas_hf_by_hand():
    ref = np.zeros((2, 2, 2))
    ref[0] = 1.0
    out = np.ones((2, 2, 2))
    assert sam(out, ref) == pytest.approx(45.0)  # (1, 1) vs (1, 0) at every pixel
    hr = np.stack([np.full((4, 4), 0.2), np.full((4, 4), 0.4)])
    sr = hr + np.stack([np.full((4, 4), 0.02), np.full((4, 4), -0.04)])  # RMSE/mean = 0.1 in both bands
    assert ergas(sr, hr, scale=4) == pytest.approx(100 / 4 * 0.1)
    img = torch.rand(32, 32, generator=torch.Generator().manual_seed(3))
    assert hf_energy_ratio(img, img, 2) == pytest.approx(1.0)
    assert hf_energy_ratio(2 * img, img, 2) == pytest.approx(4.0)
    assert hf_energy_ratio(gaussian_blur(img, 1.5), img, 2) < 0.2
    table = metric_table(img[None], img[None], 2)
    assert table["psnr"] == float("inf") and table["ssim"] == pytest.approx(1.0) and "sam" not in table


def test_cmse_is_blind_to_bias_and_integer_shift():
    hr = torch.rand(2, 1, 20, 20)
    sr = torch.roll(hr, shifts=(1, -2), dims=(2, 3)) + 0.3
    assert float(losses.cmse_loss(sr, hr, border=3)) == pytest.approx(0.0, abs=1e-10)
    assert float(losses.mse(sr, hr)) > 0.05
    clear = torch.ones(2, 20, 20)
    clear[:, :10] = 0
    assert float(losses.cmse_loss(sr, hr, clear, border=3)) == pytest.approx(0.0, abs=1e-10)


def test_registered_loss_recovers_subpixel_shifts():
    g = torch.Generator().manual_seed(4)
    hr = gaussian_blur(torch.rand(1, 1, 32, 32, generator=g), 1.5)
    sr = lanczos_shift(hr, torch.tensor([[0.5, -0.5]]))
    assert float(losses.registered_loss(sr, hr)) < 0.2 * float(losses.l1(sr, hr))
    assert float(losses.ssim_loss(hr, hr)) == pytest.approx(0.0, abs=1e-6)


def test_gan_losses():
    d = Discriminator(channels=1, features=4)
    tap = losses.FeatureTap(d)
    sr, hr = torch.rand(2, 1, 32, 32, requires_grad=True), torch.rand(2, 1, 32, 32)
    g_adv, feat, d_loss = losses.gan_losses(d, tap, sr, hr)
    assert all(torch.isfinite(t) for t in (g_adv, feat, d_loss))
    (g_adv + feat).backward()
    assert sr.grad is not None and float(sr.grad.abs().sum()) > 0
