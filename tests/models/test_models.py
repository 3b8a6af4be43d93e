import numpy as np
import pytest
import torch
import torch.nn.functional as F

from srcube import models
from srcube.models import ModelSpec


def test_registry_lists_baselines():
    names = models.list_models()
    assert {"bicubic", "bilinear", "nearest"} <= set(names)
    assert names == sorted(names)


@pytest.mark.parametrize("name", models.list_models())
def test_the_registered_size_is_what_build_makes(name):
    """`srcube models` shows each architecture's parameters and reach from its entry, without building it."""
    from srcube.models.base import count_parameters

    e = models.entry(name)
    built = models.build(name, scale=4 if 4 in e.scales else e.scales[0])
    assert e.size == (count_parameters(built), built.receptive_field), f"ModelEntry({name!r}, ..., size=...)"


def test_unknown_model_lists_known_names():
    with pytest.raises(models.UnknownModelError, match=r"known models: .*bicubic"):
        models.build("no-such-model")


def test_unsupported_scale():
    with pytest.raises(models.UnsupportedScaleError, match="supports scales"):
        models.spec_for("bicubic", scale=16)


@pytest.mark.parametrize("name", ["nearest", "bilinear", "bicubic"])
@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("bands", [1, 4])
def test_interpolation_shapes(name, scale, bands):
    m = models.build(name, scale=scale)
    y = m(torch.rand(2, bands, 9, 7))
    assert y.shape == (2, bands, 9 * scale, 7 * scale)
    assert m.multi_frame is False and m.bands is None


@pytest.mark.parametrize("name", ["nearest", "bilinear", "bicubic"])
def test_constant_images_stay_constant(name):
    m = models.build(name, scale=3)
    y = m(torch.full((1, 2, 5, 6), 0.37))
    assert torch.allclose(y, torch.full_like(y, 0.37), atol=1e-6)


def test_nearest_maps_each_pixel_to_scale_by_scale_block():
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    y = models.build("nearest", scale=4)(x)
    blocks = y.reshape(1, 1, 3, 4, 4, 4).permute(0, 1, 2, 4, 3, 5)
    assert torch.equal(blocks.amin((-1, -2)), x) and torch.equal(blocks.amax((-1, -2)), x)


def test_bilinear_has_no_half_pixel_shift():
    # a linear ramp in x sampled at output centres (j + 0.5) / s - 0.5 stays exactly linear inside
    x = torch.arange(8.0).repeat(1, 1, 4, 1)
    y = models.build("bilinear", scale=2)(x)[0, 0, 0]
    expected = (torch.arange(16.0) + 0.5) / 2 - 0.5
    assert torch.allclose(y[1:-1], expected[1:-1])


@pytest.mark.parametrize(("name", "reach"), [("nearest", 0), ("bilinear", 1), ("bicubic", 2)])
def test_receptive_field_is_measured_not_only_declared(name, reach):
    """Perturb one input pixel and find how far (in input pixels) the output changes."""
    m = models.build(name, scale=4)
    x = torch.rand(1, 1, 21, 21, generator=torch.Generator().manual_seed(0))
    x2 = x.clone()
    x2[0, 0, 10, 10] += 1.0
    changed = (m(x2) - m(x)).abs()[0, 0] > 1e-7
    rows = torch.nonzero(changed.any(1)).flatten()
    lr_rows = set((rows // 4).tolist())
    measured = max(abs(r - 10) for r in lr_rows)
    assert measured == reach == m.receptive_field


def test_spec_builds_same_model_and_tokenizes_stably():
    from dask.base import tokenize

    a, b = ModelSpec.of("bicubic", scale=4), ModelSpec.of("bicubic", scale=4)
    assert a == b and hash(a) == hash(b) and tokenize(a) == tokenize(b)
    assert tokenize(a) != tokenize(ModelSpec.of("bicubic", scale=2))
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(a.build()(x), F.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False))
    assert a.build().describe()["receptive_field"] == 2
    assert np.isclose(a.build().describe()["parameters"], 0)
