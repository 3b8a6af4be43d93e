"""Small helpers shared by test modules: the repository, the real data beside it, georeferenced arrays,
tiny model configurations, object-store credentials."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rioxarray  # noqa: F401  (registers .rio)
import torch
import xarray as xr
from affine import Affine

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("SRCUBE_SHARED", REPO.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test with the reason."""
    path = SHARED.joinpath("data", *parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (../shared is not beside the repo)")
    return path



S3_CREDS = {"AWS_ACCESS_KEY_ID": "testing-key-id", "AWS_SECRET_ACCESS_KEY": "testing-secret", "AWS_REGION": "us-east-1"}



def georef(a: np.ndarray, res: float = 10.0, x0: float = 600000.0, y0: float = 5700000.0) -> xr.DataArray:
    t, b, h, w = a.shape
    return xr.DataArray(
        a, dims=("time", "band", "y", "x"),
        coords={"time": np.arange(t), "band": [f"B{i}" for i in range(b)],
                "x": x0 + res * (np.arange(w) + 0.5), "y": y0 - res * (np.arange(h) + 0.5)},
    ).rio.write_crs("EPSG:32631").rio.write_transform(Affine(res, 0, x0, 0, -res, y0))



def georef_views(views: np.ndarray, masks: np.ndarray, res: float = 10.0) -> tuple[xr.DataArray, xr.DataArray]:
    """(window, view, band, y, x) views and (window, view, y, x) clear masks on one georeferenced grid, as
    :func:`srcube.super_resolve_views` takes them."""
    grid = georef(np.zeros((1, 1, *views.shape[-2:]), np.float32), res=res).isel(time=0, band=0, drop=True)
    bands = [f"B{i}" for i in range(views.shape[2])]
    return (xr.DataArray(views, dims=("window", "view", "band", "y", "x"), coords={"band": bands, **grid.coords}),
            xr.DataArray(masks, dims=("window", "view", "y", "x"), coords=grid.coords))


# tiny widths so every architecture runs in milliseconds on a CPU
TINY = {
    "srcnn": {"features": (8, 4)},
    "elsr": {},
    "srgan": {"features": 8, "blocks": 2},
    "esrgan": {"features": 8, "blocks": 1, "growth": 4},
    "highresnet": {"features": 8, "n_views": 4},
    "lrnet": {"features": 8, "blocks": 2},
    "bicubic": {}, "bilinear": {}, "nearest": {}, "lanczos": {},
}


def randomize(model, seed=0, std=0.3):
    """Random (non-zero) weights everywhere, so every path of the network is live."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return model


def stop_process_group(proc: subprocess.Popen, timeout: float = 30) -> None:  # type: ignore[type-arg]
    """SIGTERM the process group of ``proc`` (started with ``start_new_session=True``), SIGKILL it after
    ``timeout`` seconds."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
