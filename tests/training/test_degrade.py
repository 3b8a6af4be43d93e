"""The Wald pairs' degradation (training/degrade.py): the PSF matched to the MTF, block means, and the blur of
models/psf.py (one implementation), tiny images included."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from srcube.models.psf import Degradation, factor_for_mtf, gaussian_blur
from srcube.training.degrade import degrade, psf_sigma


def test_degradation():
    for s in (2, 3, 4):
        sigma = psf_sigma(s)
        # the Gaussian's transfer at the LR Nyquist frequency 1/(2s) is the MTF it was matched to
        assert math.exp(-2 * math.pi**2 * sigma**2 / (2 * s) ** 2) == pytest.approx(0.3)
    const = torch.full((1, 16, 16), 0.25)
    assert torch.allclose(degrade(const, 4), torch.full((1, 4, 4), 0.25))
    x = torch.rand(2, 18, 17)
    assert degrade(x, 3).shape == (2, 6, 5)
    with pytest.raises(ValueError):
        psf_sigma(2, 1.5)


def test_it_is_the_psf_modules_blur_then_block_means():
    """One Wald degradation: the area-decimation Degradation of models.psf with the MTF's sigma, the image
    first cropped to whole blocks."""
    x = torch.rand(3, 50, 37, generator=torch.Generator().manual_seed(1))
    for s in (2, 3, 4):
        h, w = 50 // s * s, 37 // s * s
        want = Degradation(factor_for_mtf(0.3), "area")(x[..., :h, :w], s)
        assert torch.equal(degrade(x, s), want)
        by_hand = F.avg_pool2d(gaussian_blur(x[:, :h, :w], psf_sigma(s))[:, None], s)[:, 0]
        assert torch.equal(degrade(x, s), by_hand)


@pytest.mark.parametrize(("shape", "scale"), [((2, 4, 4), 4), ((1, 3, 9), 3), ((1, 2, 6), 2), ((1, 5, 5), 4)])
def test_images_smaller_than_the_psf_are_degraded(shape, scale):
    """An image smaller than the PSF's kernel (radius 6 at x4) is blurred as models.psf blurs it (reflected as
    far as it goes, then its edge repeated): a constant stays constant, and the result is the block mean of
    that blur (the copy this module had raised on reflect padding wider than the image)."""
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    out = degrade(x, scale)
    assert out.shape == (shape[0], shape[1] // scale, shape[2] // scale) and torch.isfinite(out).all()
    h, w = shape[1] // scale * scale, shape[2] // scale * scale
    blurred = gaussian_blur(x[:, :h, :w], psf_sigma(scale))
    assert torch.allclose(out, F.avg_pool2d(blurred[:, None], scale)[:, 0], rtol=0, atol=1e-15)
    const = degrade(torch.full(shape, 0.2, dtype=torch.float64), scale)
    assert torch.allclose(const, torch.full_like(const, 0.2), rtol=0, atol=1e-15)
