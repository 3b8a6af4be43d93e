"""The one Gaussian blur of srcube (models/psf.py) against a plain-loop implementation of its padding rule,
on images larger and smaller than its kernel (a tiny image reflects as far as it goes, then repeats its edge)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from srcube.models.psf import gaussian_blur


def _blur_by_hand(img: np.ndarray, sigma: float) -> np.ndarray:
    """Each output pixel the kernel-weighted sum of its neighbours, read through the padding rule: an index
    before the start reflects about the first pixel as far as the image goes (at most ``n - 1``), beyond that
    the last reflected value repeats; likewise after the end."""
    radius = max(1, math.ceil(3 * sigma))
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-(t**2) / (2 * sigma**2))
    k /= k.sum()

    def src(p: int, n: int) -> int:
        r = min(radius, n - 1)
        if p < 0:
            return min(-p, r)
        if p > n - 1:
            return max(2 * (n - 1) - p, n - 1 - r)
        return p

    h, w = img.shape
    out = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            out[i, j] = sum(k[u] * k[v] * img[src(i + u - radius, h), src(j + v - radius, w)]
                            for u in range(2 * radius + 1) for v in range(2 * radius + 1))
    return out


@pytest.mark.parametrize("shape", [(12, 15), (3, 7), (2, 2), (1, 5), (5, 1), (1, 1)])
@pytest.mark.parametrize("sigma", [0.5, 1.98])
def test_gaussian_blur_matches_the_padding_rule_by_hand_on_large_and_tiny_images(shape, sigma):
    img = np.random.default_rng(sum(shape)).random(shape)
    got = gaussian_blur(torch.from_numpy(img)[None, None], sigma)[0, 0].numpy()
    assert got.shape == shape
    np.testing.assert_allclose(got, _blur_by_hand(img, sigma), rtol=0, atol=1e-12)
    const = gaussian_blur(torch.full((2, *shape), 0.25, dtype=torch.float64), sigma)
    assert torch.allclose(const, torch.full_like(const, 0.25), rtol=0, atol=1e-15)  # a constant stays constant
