"""The opensr-test metrics on constructed cases (training/evaluation/opensr.py)."""

from __future__ import annotations

import math

import pytest
import torch

from srcube.training.evaluation.opensr import (
    consistency,
    correctness,
    downsample_antialias,
    phase_shift,
    upsample_bilinear,
)
from tests.support.textures import noisy, texture


def fourier_shift(x: torch.Tensor, dy: float, dx: float) -> torch.Tensor:
    """x displaced by (dy, dx) pixels: out(p) = x(p - d), periodic."""
    h, w = x.shape[-2:]
    fy, fx = torch.fft.fftfreq(h, dtype=torch.float64)[:, None], torch.fft.fftfreq(w, dtype=torch.float64)[None]
    return torch.fft.ifft2(torch.fft.fft2(x) * torch.exp(-2j * math.pi * (fy * dy + fx * dx))).real


def test_opensr_identical_sr_and_hr_has_no_hallucination():
    hr = texture(3, 128, 128, seed=10)
    lr = downsample_antialias(hr, 4)
    c = correctness(lr, hr, hr, 4)
    assert c["pixels"] > 0.2 * 96 * 96
    assert (c["hallucination_pct"], c["omission_pct"], c["improvement_pct"]) == (0.0, 0.0, 100.0)
    soft = correctness(lr, hr, hr, 4, norm="softmin")
    assert soft["improvement_pct"] > 90 and soft["hallucination_pct"] < 5


def test_opensr_sr_equal_to_lr_upsampled_is_consistent_and_improves_nothing():
    hr = texture(3, 128, 128, seed=11)
    lr = downsample_antialias(hr, 4)
    c = correctness(lr, upsample_bilinear(lr, 4), hr, 4)
    assert (c["improvement_pct"], c["omission_pct"], c["hallucination_pct"]) == (0.0, 100.0, 0.0)
    noise = correctness(lr, noisy(hr, 0.03, 12), hr, 4)
    assert noise["hallucination_pct"] > 20  # invented texture is told apart
    # a reflectance ramp: bilinear up then antialiased down gives the LR back exactly (inside the border)
    yy, xx = torch.meshgrid(torch.arange(32.0, dtype=torch.float64), torch.arange(32.0, dtype=torch.float64),
                            indexing="ij")
    ramp = torch.stack([0.1 + 0.002 * xx + 0.001 * yy, 0.2 - 0.001 * xx + 0.003 * yy, 0.15 + 0.0005 * xx])
    cons = consistency(ramp, upsample_bilinear(ramp, 4), 4)
    assert max(cons["reflectance_l1"]) < 1e-12 and cons["spectral_deg"] < 1e-3 and cons["spatial_px_all"] < 0.02
    biased = consistency(ramp, upsample_bilinear(ramp, 4) * 1.1, 4)  # SR that brightens by 10 %
    assert min(biased["reflectance_l1"]) > 0.009 and biased["spectral_deg"] < 1e-3  # reflectance, not spectrum


def test_opensr_spatial_metric_finds_a_known_subpixel_shift():
    hr = texture(3, 256, 256, seed=13)
    lr = downsample_antialias(hr, 4)
    assert consistency(lr, hr, 4)["spatial_px_all"] < 0.05
    for dy, dx in ((0.3, -0.45), (0.5, 0.0), (-0.2, 0.15)):  # LR pixels
        sr = fourier_shift(hr, 4 * dy, 4 * dx)
        cons = consistency(lr, sr, 4)
        assert cons["spatial_px_all"] == pytest.approx(math.hypot(dy, dx), abs=0.1)
        assert all(abs(s - math.hypot(dy, dx)) < 0.1 for s in cons["spatial_px"])
        got = phase_shift(lr[0], downsample_antialias(sr, 4)[0])
        assert got == pytest.approx((dy, dx), abs=0.1)
