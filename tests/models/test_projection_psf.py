"""The PSF the consistency projection assumes (models.psf.PROJECTION_PSF) and the models that record theirs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from srcube import models
from srcube.models.consistency import Projection, own_projection
from srcube.models.psf import PROJECTION_PSF, ROBUSTNESS, SENSOR_PSF
from srcube.training.datasets.scenes import scenes
from srcube.training.evaluation.scenes import scene_data
from srcube.training.evaluation.stats import psnr_own_peak


def test_the_projection_assumes_a_narrower_psf_than_the_nominal_one():
    proj = Projection.for_sensor("sentinel-2", 4)
    assert proj.degradation.sigma == PROJECTION_PSF["sentinel-2"] < SENSOR_PSF["sentinel-2"]
    assert proj.degradation.decimation == "point" and proj.sigma == pytest.approx(4 * PROJECTION_PSF["sentinel-2"])
    assert Projection.for_sensor("sentinel-2", 2, sigma=0.494).degradation.sigma == 0.494
    # the narrower PSF reaches less far: tiles borrow fewer pixels than with the nominal one
    assert proj.margin <= Projection.for_sensor("sentinel-2", 4, sigma=SENSOR_PSF["sentinel-2"]).margin
    for bad in (0, -0.3, 3.0, True, "0.4"):
        with pytest.raises(ValueError, match="sigma"):
            Projection.for_sensor("sentinel-2", 4, sigma=bad)  # type: ignore[arg-type]


def test_an_lrnet_records_the_psf_of_its_projection():
    net = models.build("lrnet", scale=2, features=8, blocks=1, project="sentinel-2", project_sigma=0.45)
    assert net.projection is not None and net.projection.degradation.sigma == 0.45
    assert own_projection(net) is net.projection and own_projection(models.build("bicubic", scale=2)) is None
    default = models.build("lrnet", scale=2, features=8, blocks=1, project="sentinel-2")
    assert default.projection is not None and default.projection.degradation.sigma == PROJECTION_PSF["sentinel-2"]
    with pytest.raises(ValueError, match="project_sigma"):
        models.build("lrnet", scale=2, features=8, blocks=1, project_sigma=0.45)


def _psnr(x: torch.Tensor, ref: torch.Tensor) -> np.ndarray:
    return np.array([psnr_own_peak(x[b], ref[b])[0] for b in range(ref.shape[0])])


@pytest.mark.parametrize("scale", [2, 4])
def test_the_projection_never_loses_to_bicubic_on_a_robustness_row(scale):
    """On the validation place's real bands (29RKH), bicubic made consistent with the projection srcube runs is
    never more than 0.3 dB below bicubic on any robustness row (the issue's bound), while the nominal PSF is:
    the property PROJECTION_PSF was chosen for (bench/projection_psf.py measures it on every non-test place)."""
    sc = next(s for s in scenes("s2-10m", "validation"))
    if not sc.available():
        pytest.skip(f"real data absent ({sc.path}); bench/projection_psf.py measures the same where it is present")
    ref = torch.from_numpy(scene_data(sc, multiple=scale, max_side=240).reference).double()
    bicubic = models.build("bicubic", scale=scale)
    chosen = Projection.for_sensor("sentinel-2", scale)
    nominal = Projection.for_sensor("sentinel-2", scale, sigma=SENSOR_PSF["sentinel-2"])
    worst_chosen, worst_nominal = np.inf, np.inf
    for deg in ROBUSTNESS:
        low = deg(ref, scale, torch.Generator().manual_seed(0))
        base = bicubic(low[None])[0]
        p0 = _psnr(base, ref)
        worst_chosen = min(worst_chosen, float((_psnr(chosen.apply(low, base), ref) - p0).mean()))
        worst_nominal = min(worst_nominal, float((_psnr(nominal.apply(low, base), ref) - p0).mean()))
    assert worst_chosen >= -0.3, worst_chosen
    assert worst_nominal < -0.3, worst_nominal  # the failure the choice avoids is there to see
