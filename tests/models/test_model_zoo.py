"""The model zoo: shapes, measured receptive fields, determinism, weights, multi-frame (ONNX: test_onnx.py)."""

import json

import numpy as np
import pytest
import torch

from srcube import models
from srcube.models.highresnet import masked_median
from srcube.models.interp import lanczos_phase_weights, lanczos_shift
from srcube.models.sisr import Discriminator, upsampling_steps
from tests.support.helpers import TINY, randomize

LEARNED = ["srcnn", "elsr", "srgan", "esrgan", "highresnet", "lrnet"]
SHARPENERS = {"hpf", "dsen2"}  # two inputs (low bands, guide): tests/test_sharpen.py


def tiny(name, scale=4, **kw):
    return models.build(name, scale=scale, **{**TINY[name], **kw})


def inputs(model, x):
    """(x,) for single-image models; three slightly different views and full masks for multi-frame."""
    if model.multi_frame:
        views = x[:, None].repeat(1, 3, 1, 1, 1) + 0.01 * torch.arange(3.0, dtype=x.dtype)[None, :, None, None, None]
        return views, torch.ones(views.shape[0], 3, *x.shape[-2:], dtype=x.dtype)
    return (x,)


def run(model, x):
    return model(*inputs(model, x))


def test_every_architecture_is_registered():
    assert set(TINY) | SHARPENERS == set(models.list_models())
    assert {models.entry(n).kind for n in SHARPENERS} == {"sharpen", "sharpen-baseline"}


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("channels", [1, 4])
def test_shapes(name, scale, channels):
    kw = {"channels": channels} if name in LEARNED else {}
    m = tiny(name, scale, **kw).eval()
    x = torch.rand(2, channels, 11, 9)
    with torch.inference_mode():
        y = run(m, x)
    assert y.shape == (2, channels, 11 * scale, 9 * scale)
    assert torch.isfinite(y).all()


def test_band_agnostic_models_take_any_band_count_one_at_a_time():
    m = randomize(tiny("srgan"), std=0.05).eval()
    x = torch.rand(1, 3, 10, 10)
    with torch.inference_mode():
        joint = m(x)
        single = torch.cat([m(x[:, i : i + 1]) for i in range(3)], 1)
    assert torch.allclose(joint, single, rtol=1e-5, atol=1e-6)
    fixed = tiny("srgan", bands=("B04", "B08"))
    assert fixed.channels == 2 and fixed.bands == ("B04", "B08")
    with pytest.raises(ValueError, match="takes 2 band"):
        fixed(torch.rand(1, 3, 8, 8))


def _measured_reach(model):
    model = randomize(model.double()).eval()
    rf = model.receptive_field
    n = 2 * rf + 9
    c = n // 2
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 1, n, n, dtype=torch.float64, generator=g)
    x2 = x.clone()
    x2[0, 0, c, c] += 1.0
    with torch.no_grad():
        changed = (run(model, x2) - run(model, x)).abs()[0, 0] > 1e-12
    rows = torch.nonzero(changed.any(1)).flatten() // model.scale
    cols = torch.nonzero(changed.any(0)).flatten() // model.scale
    return max(int((rows - c).abs().max()), int((cols - c).abs().max()))


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_receptive_field_is_measured(name, scale):
    """Perturb one input pixel: the output changes exactly out to the declared receptive field."""
    m = tiny(name, scale)
    assert _measured_reach(m) == m.receptive_field


def test_receptive_field_grows_with_depth():
    assert tiny("esrgan", blocks=3).receptive_field == tiny("esrgan", blocks=1).receptive_field + 2 * 15
    assert tiny("highresnet", n_views=16).receptive_field == tiny("highresnet", n_views=4).receptive_field + 6


@pytest.mark.parametrize("name", LEARNED)
def test_deterministic(name):
    torch.manual_seed(7)
    a = tiny(name)
    torch.manual_seed(7)
    b = tiny(name)
    x = torch.rand(1, 1, 12, 12)
    with torch.inference_mode():
        assert torch.equal(run(a.eval(), x), run(b.eval(), x))
        assert torch.equal(run(a, x), run(a, x))


def test_upsampling_steps():
    assert upsampling_steps(4) == [2, 2] and upsampling_steps(3) == [3] and upsampling_steps(6) == [2, 3]
    assert upsampling_steps(8) == [2, 2, 2] and upsampling_steps(5) == [5]


def test_residual_generators_start_as_bicubic():
    x = torch.rand(1, 2, 9, 9)
    bicubic = models.build("bicubic", scale=4)(x)
    for name in ("srgan", "esrgan", "srcnn"):
        m = tiny(name).eval()
        if name == "srcnn":
            torch.nn.init.zeros_(m.body[-1].weight)
            torch.nn.init.zeros_(m.body[-1].bias)
        with torch.inference_mode():
            assert torch.allclose(m(x), bicubic, atol=1e-6)


def test_lanczos():
    w = lanczos_phase_weights(4, 3)
    assert w.shape == (4, 7) and np.allclose(w.sum(1), 1.0)
    assert np.allclose(w[::-1, ::-1], w)  # symmetric phases
    m = models.build("lanczos", scale=2)
    ramp = torch.arange(16.0).repeat(1, 1, 16, 1)
    y = m(ramp)[0, 0, 0]
    # no half-pixel shift: the two output pixels of an input pixel straddle its value symmetrically
    assert torch.allclose((y[0::2] + y[1::2])[3:-3] / 2, torch.arange(16.0)[3:-3], atol=1e-5)
    assert torch.allclose(y[6:-6], (torch.arange(32.0)[6:-6] + 0.5) / 2 - 0.5, atol=0.05)
    assert torch.allclose(m(torch.full((1, 1, 8, 8), 0.3)), torch.full((1, 1, 16, 16), 0.3), atol=1e-6)
    img = torch.rand(2, 1, 12, 12)
    moved = lanczos_shift(img, torch.tensor([[1.0, 0.0], [0.0, -2.0]]))
    assert torch.allclose(moved[0, 0, 4:-3], img[0, 0, 3:-4], atol=1e-5)
    assert torch.allclose(moved[1, 0, :, 3:-4], img[1, 0, :, 5:-2], atol=1e-5)


def test_discriminator():
    d = Discriminator(channels=4, features=4)
    assert d(torch.rand(2, 4, 32, 40)).shape == (2,)


# --- multi-frame -------------------------------------------------------------------------


def test_masked_median_matches_nanmedian():
    g = torch.Generator().manual_seed(0)
    v, m = torch.rand(2, 5, 3, 6, 6, generator=g), (torch.rand(2, 5, 6, 6, generator=g) > 0.3).float()
    present = torch.ones(2, 5, dtype=torch.bool)
    ref = torch.nanmedian(torch.where((m > 0.5).unsqueeze(2), v, torch.nan), 1).values
    got = masked_median(v, m, present)
    ok = ~torch.isnan(ref)
    assert torch.equal(got[ok], ref[ok])
    fallback = torch.median(v, 1).values
    assert torch.equal(got[~ok], fallback[~ok])


def test_highresnet_with_fewer_views_than_configured():
    m = randomize(tiny("highresnet", scale=3, n_views=8), std=0.1).eval()
    g = torch.Generator().manual_seed(2)
    views, masks = torch.rand(2, 3, 1, 10, 10, generator=g), (torch.rand(2, 3, 10, 10, generator=g) > 0.2).float()
    with torch.inference_mode():
        few = m(views, masks)
        padded = m(torch.cat([views, torch.zeros(2, 5, 1, 10, 10)], 1),
                   torch.cat([masks, torch.zeros(2, 5, 10, 10)], 1))
        one = m(views[:, :1], masks[:, :1])
    assert few.shape == (2, 1, 30, 30) and one.shape == (2, 1, 30, 30)
    assert torch.allclose(few, padded, atol=1e-6)  # missing views = padded, masked views
    with pytest.raises(ValueError, match="at most 8"):
        m(torch.rand(1, 9, 1, 8, 8))


def test_highresnet_ignores_a_view_marked_missing():
    m = randomize(tiny("highresnet", scale=3, n_views=4), std=0.1).eval()
    views, masks = torch.rand(1, 3, 1, 8, 8), torch.ones(1, 3, 8, 8)
    junk = views.clone()
    junk[:, 2] = 5.0  # garbage in a view that is declared missing
    present = torch.tensor([[True, True, False]])
    with torch.inference_mode():
        a = m(views[:, :2], masks[:, :2])
        b = m(junk, masks, present=present)
    assert torch.allclose(a, b, atol=1e-6)


def test_untrained_highresnet_is_the_bicubic_clear_median():
    m = tiny("highresnet", scale=3, n_views=4).eval()  # residual: decoder starts at zero
    views = torch.rand(1, 3, 2, 8, 8)
    with torch.inference_mode():
        out = m(views, torch.ones(1, 3, 8, 8))
    ref = torch.nn.functional.interpolate(torch.median(views, 1).values, scale_factor=3, mode="bicubic",
                                          align_corners=False)
    assert torch.allclose(out, ref, atol=1e-6)


# --- weights -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", LEARNED)
def test_weights_round_trip(tmp_path, name):
    m = randomize(tiny(name, scale=3), std=0.05).eval()
    meta = models.save_weights(m, tmp_path / f"{name}-x3", trained=True,
                               training={"data": "unit test", "recipe": "none", "licence": "CC0-1.0"},
                               metrics={"psnr": 1.0}, normalisation=models.Normalisation(0.1, 0.2))
    doc = json.loads((tmp_path / f"{name}-x3.json").read_text())
    for key in ("architecture", "config", "bands", "scale", "normalisation", "receptive_field", "training",
                "licence", "metrics", "sha256", "trained"):
        assert key in doc
    assert doc["receptive_field"] == m.receptive_field and len(doc["sha256"]) == 64
    loaded = models.load_model(str(tmp_path / f"{name}-x3.safetensors"))
    x = torch.rand(1, 1, 10, 10)
    args = inputs(m, x)
    with torch.inference_mode():
        want = m((args[0] - 0.1) / 0.2, *args[1:]) * 0.2 + 0.1
        assert torch.allclose(loaded(*args), want, atol=1e-6)
    assert loaded.weights_meta == meta and loaded.receptive_field == m.receptive_field


def test_weights_mismatch_errors(tmp_path):
    m = randomize(tiny("elsr", scale=4, bands=("B04", "B08")), std=0.1)
    path = tmp_path / "elsr.safetensors"
    models.save_weights(m, path, trained=True, training={"data": "unit test"})
    with pytest.raises(models.IncompatibleWeightsError, match="x4, not x2"):
        models.load_model(str(path), scale=2)
    with pytest.raises(models.IncompatibleWeightsError, match=r"bands \['B04', 'B08'\]"):
        models.load_model(str(path), bands=["B08", "B04"])
    assert models.load_model(str(path), scale=4, bands=["B04", "B08"]).bands == ("B04", "B08")
    with pytest.raises(models.WeightsNotFoundError, match="never downloads"):
        models.load_model(str(tmp_path / "missing.safetensors"))
    with pytest.raises(models.WeightsNotFoundError, match="no trained weights"):
        models.load_model("esrgan")
    with pytest.raises(models.UnknownModelError, match="known models"):
        models.load_model("edsr")
    # a flipped byte: the hash no longer matches the metadata
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(models.WeightsIntegrityError, match="corrupt or was replaced"):
        models.load_model(str(path))


def test_untrained_weights_are_refused_unless_allowed(tmp_path):
    path = tmp_path / "srgan-random"
    models.save_weights(tiny("srgan"), path, trained=False, training={"data": "none: random init"})
    with pytest.raises(models.UntrainedWeightsError, match="marked untrained"):
        models.load_model(str(path) + ".safetensors")
    assert models.load_model(str(path) + ".json", allow_untrained=True).name == "srgan"


def test_weights_that_do_not_fit_their_architecture(tmp_path):
    path = tmp_path / "w"
    models.save_weights(tiny("srgan"), path, trained=True)
    doc = json.loads((tmp_path / "w.json").read_text())
    doc["config"]["features"] = 16
    (tmp_path / "w.json").write_text(json.dumps(doc))
    with pytest.raises(models.IncompatibleWeightsError, match="does not fit"):
        models.load_model(str(tmp_path / "w.safetensors"))


def test_macs_per_output_pixel_by_hand():
    from srcube.models.profile import macs_per_output_pixel

    # SRCNN 9-1-5 (64, 32) on one band, at the output grid, + 16 for its bicubic input
    assert macs_per_output_pixel(models.build("srcnn", scale=4)) == 81 * 64 + 64 * 32 + 25 * 32 + 16
    # ELSR at the input grid: (9*1*6 + 2*9*6*6 + 9*6*16) per input pixel = 1566, over 16 output pixels
    assert macs_per_output_pixel(models.build("elsr", scale=4)) == pytest.approx(1566 / 16)
    assert macs_per_output_pixel(models.build("bicubic", scale=4)) == 16


def test_cli_models():
    from typer.testing import CliRunner

    from srcube.cli.commands import app

    res = CliRunner().invoke(app, ["models"], env={"COLUMNS": "220"})
    assert res.exit_code == 0
    for name in ("highresnet", "esrgan", "lanczos", "multi-frame", "1,553,409"):
        assert name in res.output
