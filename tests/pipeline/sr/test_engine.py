"""The tiled-map engine under device memory pressure: an out-of-memory error halves the batch, then splits
the tile, and the result equals the unsplit run; below the floor it is a DeviceMemoryError that says what
to do. Run on the CPU with models that raise CUDA's out-of-memory error above a size, as a GPU would."""

from __future__ import annotations

import dask
import numpy as np
import pytest
import torch

from srcube import models
from srcube.models.highresnet import HighResNet
from srcube.models.srcnn import SRCNN
from srcube.pipeline import super_resolve, super_resolve_views
from srcube.pipeline.errors import DeviceMemoryError
from srcube.pipeline.sr.engine import MIN_SPLIT_CORE
from tests.support.helpers import georef, georef_views

#: the input shapes the limited models were called with (module-level: the graph may hold a copy of the model)
SEEN: list[tuple[int, ...]] = []


class _OutOfMemoryAbove:
    """Mixed into a model: torch.cuda.OutOfMemoryError for inputs above ``max_pixels`` (batch x height x
    width of the first input), as a GPU raises it; every input shape goes into :data:`SEEN`."""

    max_pixels = 0

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        x = args[0]
        SEEN.append(tuple(x.shape))
        if x.shape[0] * x.shape[-2] * x.shape[-1] > self.max_pixels:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (test)")
        return super().forward(*args)  # type: ignore[misc]


class LimitedSRCNN(_OutOfMemoryAbove, SRCNN):
    pass


class LimitedHighResNet(_OutOfMemoryAbove, HighResNet):
    pass


def _limited(model: models.SRModel, max_pixels: int) -> models.SRModel:
    model.__class__ = LimitedSRCNN if isinstance(model, SRCNN) else LimitedHighResNet
    model.max_pixels = max_pixels  # type: ignore[attr-defined]
    SEEN.clear()
    return model


@pytest.fixture(autouse=True)
def _in_this_process():
    """The models count their calls in this process: compute on threads here, not on a session cluster."""
    with dask.config.set(scheduler="threads"):
        yield


def _srcnn(seed: int = 0) -> models.SRModel:
    torch.manual_seed(seed)
    return models.build("srcnn", scale=2).eval()


@pytest.mark.parametrize("frames_per_task", [1, 4])
def test_out_of_memory_splits_and_gives_the_unsplit_result(frames_per_task):
    a = np.random.default_rng(3).random((4, 1, 70, 52), dtype=np.float32)
    a[1, 0, 10:14, 20:23] = np.nan
    data = georef(a)
    kw = dict(scale=2, tile=64, frames_per_task=frames_per_task, consistency=False)
    reference = super_resolve(data, _srcnn(), **kw).values
    limit = 40 * 40  # a 64 x 64 tile (plus margins) does not fit, nor does a batch of them
    got = super_resolve(data, _limited(_srcnn(), limit), **kw).values
    seen = list(SEEN)
    np.testing.assert_allclose(got, reference, rtol=0, atol=1e-6)
    assert np.isnan(got).sum() == np.isnan(reference).sum() > 0
    too_big = [s for s in seen if s[0] * s[-2] * s[-1] > limit]
    assert too_big and all(s[0] * s[-2] * s[-1] <= limit for s in seen if s not in too_big)
    if frames_per_task > 1:  # the batch was halved before any tile was split
        assert any(s[0] == frames_per_task // 2 for s in seen)


def test_out_of_memory_below_the_floor_says_what_to_do():
    a = np.random.default_rng(4).random((1, 1, 48, 48), dtype=np.float32)
    model = _limited(_srcnn(), 8)  # nothing fits
    with pytest.raises(DeviceMemoryError, match=r"ran out of memory for one tile of \d+ x \d+ input pixels") as info:
        super_resolve(georef(a), model, scale=2, tile=48, consistency=False)
    assert "margin" in str(info.value) and "smaller tile" in str(info.value)
    assert isinstance(info.value, MemoryError)
    assert isinstance(info.value.__cause__, torch.cuda.OutOfMemoryError)


def test_multi_frame_out_of_memory_splits_and_gives_the_unsplit_result():
    rng = np.random.default_rng(5)
    n_windows, n_views, h, w = 3, 4, 2 * MIN_SPLIT_CORE + 40, 41
    v, m = georef_views(rng.random((n_windows, n_views, 1, h, w), dtype=np.float32),
                        rng.random((n_windows, n_views, h, w)) > 0.2)
    present = np.ones((n_windows, n_views), bool)
    present[2, 3] = False

    def model(limit: int | None = None) -> models.SRModel:
        torch.manual_seed(7)
        net = models.build("highresnet", scale=3).eval()
        return net if limit is None else _limited(net, limit)

    reference = super_resolve_views(v, m, present, model(), tile=96).values
    got = super_resolve_views(v, m, present, model(60 * w), tile=96).values  # the 72-row tile does not fit
    np.testing.assert_allclose(got, reference, rtol=0, atol=1e-5)
    assert any(s[-2] < h for s in SEEN)  # the tile was split


# --- pass tiles and batches: a task's tile cut into smaller forward passes, several per pass -------------


def test_pass_tile_defaults_per_device():
    from srcube.pipeline.sr.engine import pass_tile

    # CPU: the smallest core with ((T + 2m) / T)^2 <= 1.6, at least 128; CUDA: <= 1.15, at least 512
    assert pass_tile("cpu", 24) == 192 and pass_tile("cpu", 0) == 128
    assert pass_tile("cuda", 24) == 672 and pass_tile("cuda", 0) == 512
    assert ((192 + 48) / 192) ** 2 <= 1.6 < ((176 + 48) / 176) ** 2


@pytest.mark.parametrize(("pass_tile", "batch", "frames_per_task"), [(16, 1, 1), (16, 5, 2), (24, 64, 3), (24, 2, 3)])
def test_pass_tiles_and_batches_give_the_whole_tile_result(pass_tile, batch, frames_per_task):
    a = np.random.default_rng(8).random((3, 2, 150, 97), dtype=np.float32)
    a[1, :, 30:33, 5:9] = np.nan
    data = georef(a)
    kw = dict(scale=2, tile=128, frames_per_task=frames_per_task, consistency=True)
    reference = super_resolve(data, _srcnn(), **kw)
    model = _limited(_srcnn(), 10**9)  # nothing is out of memory: it only records the passes
    got = super_resolve(data, model, pass_tile=pass_tile, batch=batch, **kw)
    seen = list(SEEN)
    np.testing.assert_allclose(got.values, reference.values, rtol=0, atol=1e-5)
    np.testing.assert_allclose(got.consistency.values, reference.consistency.values, rtol=0, atol=1e-5)
    assert np.isnan(got.values).sum() == np.isnan(reference.values).sum() > 0
    assert max(s[-2] for s in seen) < 128  # passes smaller than the task's tile
    assert max(s[0] for s in seen) <= batch  # items per pass: frames x pass tiles, never more than the batch
    if batch >= 2 * frames_per_task:  # several tiles went through one pass
        assert max(s[0] for s in seen) >= 2 * frames_per_task


def test_multi_frame_pass_tiles_and_batches_give_the_whole_tile_result():
    rng = np.random.default_rng(9)
    v, m = georef_views(rng.random((2, 4, 1, 100, 70), dtype=np.float32), rng.random((2, 4, 100, 70)) > 0.3)
    present = np.array([[True, True, True, False], [True, False, True, True]])

    def model() -> models.SRModel:
        torch.manual_seed(11)
        return models.build("highresnet", scale=3).eval()

    reference = super_resolve_views(v, m, present, model(), tile=128).values
    got = super_resolve_views(v, m, present, _limited(model(), 10**9), tile=128, pass_tile=24, batch=6).values
    np.testing.assert_allclose(got, reference, rtol=0, atol=1e-5)
    assert max(s[-2] for s in SEEN) < 128 and max(s[0] for s in SEEN) > 1


def test_a_model_fitted_to_its_tile_gets_the_whole_tile():
    from srcube.models.sharpen import HighPassInjection

    assert not HighPassInjection().tile_local and HighPassInjection(window=5).tile_local
    assert _srcnn().tile_local
