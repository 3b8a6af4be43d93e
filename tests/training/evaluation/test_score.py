"""One scene scored (training/evaluation/score.py): block-bootstrap intervals that contain the estimate and narrow
with more blocks, paired gains."""

from __future__ import annotations

import torch

from srcube.training.evaluation.score import compare
from tests.support.textures import noisy, texture


def test_bootstrap_interval_contains_the_estimate_and_narrows_with_more_blocks():
    ref = texture(1, 256, 256, seed=4)
    ramp = torch.linspace(0.002, 0.02, 256, dtype=torch.float64)[None, :, None]  # error varies across the window
    sr, bic = ref + ramp * torch.randn(ref.shape, generator=torch.Generator().manual_seed(5), dtype=ref.dtype), \
        noisy(ref, 0.012, 6)
    widths = {}
    for side in (64, 256):  # 4 and 64 blocks of 32 x 32
        crop = (slice(None), slice(0, side), slice(0, side))
        res = compare(sr[crop], {"bicubic": bic[crop]}, ref[crop], ref[crop][:, ::4, ::4], scale=4, scene="s",
                         opensr=False, with_ssim=False)
        row = res.rows[0]
        assert row.n_blocks == (side // 32) ** 2
        assert row.model.psnr_ci[0] < row.model.psnr < row.model.psnr_ci[1]
        gain, (lo, hi) = row.gains["bicubic"]
        assert lo < gain < hi
        widths[side] = row.model.psnr_ci[1] - row.model.psnr_ci[0]
    assert widths[256] < 0.5 * widths[64]
    again = compare(sr, {"bicubic": bic}, ref, ref[:, ::4, ::4], scale=4, scene="s", opensr=False,
                       with_ssim=False)
    assert again.rows[0].model.psnr_ci == res.rows[0].model.psnr_ci  # seeded


def test_paired_gain_of_a_model_identical_to_bicubic_is_zero_and_pairing_narrows_gains():
    ref = texture(3, 128, 128, seed=7)
    bic = noisy(ref, 0.01, 8)
    res = compare(bic.clone(), {"bicubic": bic}, ref, ref[:, ::2, ::2], scale=2, scene="same", opensr=False,
                     with_ssim=False)
    for row in res.rows:
        assert row.gains["bicubic"] == (0.0, (0.0, 0.0))
        assert row.model.psnr_ci[1] - row.model.psnr_ci[0] > 0.05  # PSNR itself is uncertain; the paired gain not
    close = compare(noisy(bic, 0.001, 9), {"bicubic": bic}, ref, ref[:, ::2, ::2], scale=2, scene="close",
                       opensr=False, with_ssim=False).rows[0]
    gain_width = close.gains["bicubic"][1][1] - close.gains["bicubic"][1][0]
    assert gain_width < 0.2 * (close.model.psnr_ci[1] - close.model.psnr_ci[0])
