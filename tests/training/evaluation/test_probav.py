"""PROBA-V multi-frame (training/evaluation/probav.py): the Kelvins metric on the multi-frame Wald protocol."""

from __future__ import annotations

import pytest

from srcube import models
from srcube.training.evaluation.probav import evaluate_probav
from srcube.training.evaluation.stats import Bootstrap
from tests.support.helpers import shared_path


def test_probav_multi_frame_wald_uses_the_kelvins_metric():
    """An untrained HighRes-net (residual: bicubic of the clear median) gains exactly nothing over the median
    baseline; the Kelvins baseline (bicubic of the mean) is scored by cPSNR; intervals resample targets."""
    from srcube.training.datasets.scenes import scenes

    scene = scenes("probav", "test")[0]
    shared_path(*scene.folder.split("/"))
    net = models.build("highresnet", scale=3, features=8, n_views=8).eval()
    out = evaluate_probav(net, scene, bootstrap=Bootstrap(resamples=200), max_targets=3)
    assert out["targets"] == 3 and out["size"] == 126 and len(out["rows"]) == 3
    assert abs(out["gain_over_median"]) < 1e-9 and out["gain_over_median_ci"] == [0.0, 0.0]
    assert out["gain_ci"][0] <= out["gain"] <= out["gain_ci"][1]
    assert out["wald_kelvins_score"] == pytest.approx(
        sum(r["cpsnr_kelvins-baseline"] / r["cpsnr_model"] for r in out["rows"]) / 3)
