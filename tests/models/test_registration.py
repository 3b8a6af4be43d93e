"""Sub-pixel registration of views (models/registration.py) on real PROBA-V frames, and registered fusion in the
pipeline (super_resolve_views(register=True)): shifts come back, tiles stay exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from srcube import models
from srcube.models.registration import phase_shift, reach, register_views, shift_views
from srcube.pipeline import super_resolve_views
from srcube.training.datasets.scenes import load_probav, scenes
from tests.support.helpers import georef_views

SHIFTS = [(0.3, -0.7), (1.25, 0.4), (-0.05, 0.15), (2.6, -3.3), (0.5, 0.5)]


def _frame(name: str = "imgset0010", i: int = 0) -> torch.Tensor:
    sc = next(s for s in scenes("probav") if s.name == name)
    if not sc.available():
        pytest.skip(f"real PROBA-V frames absent ({sc.path}); the synthetic test below still covers the code")
    return torch.from_numpy(load_probav(sc)["frames"][i]).double()


def _fourier_shift(img: torch.Tensor, dy: float, dx: float) -> torch.Tensor:
    h, w = img.shape
    fy, fx = torch.fft.fftfreq(h, dtype=torch.float64)[:, None], torch.fft.fftfreq(w, dtype=torch.float64)[None]
    return torch.fft.ifft2(torch.fft.fft2(img) * torch.exp(-2j * np.pi * (fy * dy + fx * dx))).real


@pytest.mark.parametrize("name", ["imgset0010", "imgset0601", "scene_b"])
def test_known_shifts_of_real_frames_come_back_within_a_twentieth_of_a_pixel(name):
    f = _frame(name)
    for dy, dx in SHIFTS:
        moved = shift_views(f[None], torch.tensor([[dy, dx]], dtype=torch.float64))[0]  # Lanczos-3, as the pipeline
        assert np.allclose(phase_shift(moved, f), (dy, dx), atol=0.051), (dy, dx, phase_shift(moved, f))
        assert np.allclose(phase_shift(_fourier_shift(f, dy, dx), f), (dy, dx), atol=0.051)
    # textbook phase correlation (all frequencies alike) is biased by the resampling's phases near Nyquist
    moved = shift_views(f[None], torch.tensor([[0.3, -0.7]], dtype=torch.float64))[0]
    assert not np.allclose(phase_shift(moved, f, band=None), (0.3, -0.7), atol=0.051)


def test_clouded_pixels_do_not_pull_the_shift():
    f = _frame()
    moved = shift_views(f[None], torch.tensor([[0.6, -0.4]], dtype=torch.float64))[0]
    clear = torch.ones_like(f, dtype=torch.bool)
    clear[20:70, 30:90] = False
    cloudy = torch.where(clear, moved, torch.full_like(moved, 0.9))  # a bright cloud in the moving view
    assert np.allclose(phase_shift(cloudy, f, clear_reference=clear), (0.6, -0.4), atol=0.051)
    shifts = register_views(torch.stack([f, cloudy]), torch.stack([torch.ones_like(clear), clear]))
    assert shifts[0].tolist() == [0.0, 0.0] and np.allclose(shifts[1], (-0.6, 0.4), atol=0.051)


def test_shift_views_is_local_exact_for_whole_pixels_and_checks_shapes():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 1, 60, 70, generator=g, dtype=torch.float64)
    sh = torch.tensor([[0.37, -1.6], [0.0, 0.0]], dtype=torch.float64)
    whole = shift_views(img, sh)
    r = reach(float(sh.abs().max()))
    assert torch.equal(whole[1], img[1]) and r == 2 + 3 and reach(0.0) == 0
    tile = shift_views(img[:, :, 20 - r : 40 + r, 25 - r : 50 + r], sh)[:, :, r:-r, r:-r]
    torch.testing.assert_close(tile, whole[:, :, 20:40, 25:50], rtol=0, atol=1e-12)
    whole_px = shift_views(img[:1], torch.tensor([[1.0, -2.0]], dtype=torch.float64))[0, 0]
    torch.testing.assert_close(whole_px[5:-5, 5:-5], img[0, 0, 4:-6, 7:-3], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="shifts must be"):
        shift_views(img, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="one"):
        phase_shift(img[0, 0], img[0, 0, :10])


def test_registered_fusion_measures_the_shifts_and_tiles_stay_exact():
    """super_resolve_views(register=True): the measured shifts (the reflectance's view_shifts) undo the known
    ones of the views, and tiled fusion equals one pass of the model over the registered windows."""
    g = torch.Generator().manual_seed(1)
    base = torch.nn.functional.avg_pool2d(torch.rand(1, 1, 96, 96, generator=g, dtype=torch.float64), 3,
                                          stride=1, padding=1)[0, 0]  # textured, a little smooth
    applied = torch.tensor([[0.0, 0.0], [0.4, -0.3], [-0.8, 0.6], [1.1, 0.2]], dtype=torch.float64)
    views = shift_views(base[None].expand(4, -1, -1).clone(), applied).float().numpy()[None, :, None]  # (1,4,1,..)
    masks = np.ones((1, 4, 96, 96), bool)
    masks[0, 2, 10:30, 10:40] = False
    present = np.ones((1, 4), bool)
    torch.manual_seed(0)
    net = models.build("highresnet", scale=3, n_views=4).eval()
    v, m = georef_views(views, masks)
    out = super_resolve_views(v.chunk({"y": 40, "x": 40}), m, present, net, tile=48, register=True)
    got = out.compute().values
    import json

    measured = np.array(json.loads(out.attrs["view_shifts"]))[0]
    np.testing.assert_allclose(measured, -applied.numpy(), atol=0.051)
    reg_v = shift_views(torch.from_numpy(views[0]).double(), torch.from_numpy(measured)).float()
    reg_m = (shift_views(torch.from_numpy(masks[0].astype(np.float32))[:, None], torch.from_numpy(measured))[:, 0]
             > 0.5).float()
    with torch.inference_mode():
        whole = net(reg_v[None], reg_m[None], torch.from_numpy(present)).numpy()
    np.testing.assert_allclose(got, whole, rtol=0, atol=1e-5)
    plain = super_resolve_views(v, m, present, net, tile=48).compute().values
    assert "view_shifts" not in super_resolve_views(v, m, present, net, tile=48).attrs
    assert np.abs(plain - got).max() > 1e-3  # registering changed what was fused
