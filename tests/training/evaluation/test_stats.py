"""PSNR against the reference's own peak and the blocks the bootstrap resamples (training/evaluation/stats.py)."""

from __future__ import annotations

import math

import pytest

from srcube.training.evaluation.stats import block_sse, psnr_own_peak
from srcube.training.metrics import psnr
from tests.support.textures import noisy, texture


def test_psnr_against_own_peak_is_psnr_at_peak_one_plus_20_log10_peak():
    ref = texture(1, 64, 64)[0]
    x = noisy(ref, 0.01, 1)
    value, peak = psnr_own_peak(x, ref)
    assert peak == float(ref.max()) and 0.2 < peak < 0.5
    assert value == pytest.approx(psnr(x, ref) + 20 * math.log10(peak), abs=1e-9)
    assert psnr(x, ref) - value > 6  # what a peak of 1.0 would have added
    # the gain over a baseline does not depend on the peak
    base = noisy(ref, 0.02, 2)
    assert value - psnr_own_peak(base, ref)[0] == pytest.approx(psnr(x, ref) - psnr(base, ref), abs=1e-9)


def test_blocks_cover_every_pixel_once_including_partial_edge_blocks():
    ref = texture(2, 100, 70)
    x = noisy(ref, 0.01, 3)
    sse, n = block_sse(x, ref, 32)
    assert sse.shape == (2, 4 * 3) and n.sum() == 100 * 70 and sorted(set(n.tolist())) == [4 * 6, 4 * 32, 32 * 6, 1024]
    assert sse.sum(1) == pytest.approx(((x - ref) ** 2).sum((1, 2)).numpy(), rel=1e-12)
