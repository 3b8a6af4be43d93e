"""The engine on a CUDA device: fp32 is the exact path (no TF32, deterministic cuDNN), so tiled equals a
whole-image pass there too; bf16/fp16 autocast stay close to fp32; a real device out-of-memory error is
split around and gives the unsplit result. Deselected by default (``-m gpu``; ``scripts/gpu-check.sh``)."""

from __future__ import annotations

import dask
import numpy as np
import pytest
import torch

from srcube import models
from srcube.pipeline import super_resolve
from srcube.pipeline.sr.engine import exact_cuda
from tests.support.helpers import georef

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch sees none)")]


@pytest.fixture(autouse=True)
def _threads_here():
    with dask.config.set(scheduler="threads"):
        yield


def _model() -> models.SRModel:
    torch.manual_seed(0)
    return models.build("esrgan", scale=4, features=32, blocks=2).eval()


def _input(size: int = 300) -> np.ndarray:
    return np.random.default_rng(0).random((2, 1, size, size), dtype=np.float32) * 0.4


def _psnr_own_peak(x: np.ndarray, ref: np.ndarray) -> float:
    mse = float(np.mean((x - ref) ** 2))
    return 10 * np.log10(float(np.abs(ref).max()) ** 2 / max(mse, 1e-20))


def test_fp32_tiled_equals_a_whole_image_pass_on_cuda():
    net, a = _model(), _input()
    got = super_resolve(georef(a), net, tile=64, consistency=False).values
    exact_cuda(True)
    with torch.inference_mode():
        whole = net.cuda()(torch.from_numpy(a).cuda()).cpu().numpy()
    np.testing.assert_allclose(got, whole, rtol=0, atol=1e-5)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_autocast_stays_close_to_fp32_on_cuda(precision):
    net, a = _model(), _input()
    fp32 = super_resolve(georef(a), net, tile=128, consistency=False).values
    low = super_resolve(georef(a), net, tile=128, consistency=False, precision=precision).values
    psnr = _psnr_own_peak(low, fp32)
    print(f"{precision} vs fp32 on {torch.cuda.get_device_name()}: PSNR {psnr:.1f} dB (own peak)")
    assert psnr > 35.0


def test_a_real_out_of_memory_error_is_split_around():
    net, a = _model(), _input(1024)
    unsplit = super_resolve(georef(a[:1]), net, tile=1024, consistency=False).values
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info()
    block = None
    try:  # leave this process a quarter of what one 1024 px tile needs: it must split
        block = torch.empty(int(free - 96 * 2**20), dtype=torch.uint8, device="cuda")
        got = super_resolve(georef(a[:1]), net, tile=1024, consistency=False).values
    finally:
        del block
        torch.cuda.empty_cache()
    np.testing.assert_allclose(got, unsplit, rtol=0, atol=1e-5)


def test_batched_pass_tiles_sized_from_free_memory_equal_one_pass_on_cuda():
    from srcube.pipeline.sr import engine

    net, a = _model(), _input(300)
    one_pass = super_resolve(georef(a), net, tile=300, pass_tile=512, consistency=False).values
    engine._ITEM_BYTES.clear()
    got = super_resolve(georef(a), net, tile=300, pass_tile=48, consistency=False).values
    np.testing.assert_allclose(got, one_pass, rtol=0, atol=1e-5)
    assert engine._ITEM_BYTES  # the first pass of each shape measured the device memory per item
    free, _ = torch.cuda.mem_get_info()
    per_item = max(engine._ITEM_BYTES.values())
    print(f"pass tiles of 48 px: {per_item / 2**20:.1f} MiB per item, {free / 2**30:.1f} GiB free")
