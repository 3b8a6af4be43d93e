"""Cubes of neighbouring regions join without seams: each run reads a halo of ``margin`` input pixels beyond
its bbox, so its edge pixels see their real neighbours. Two abutting bboxes give, on every pixel, what one
run over both gives (the learned default with its consistency projection, the widest reach srcube has)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from srcube.pipeline import run_region

pytestmark = pytest.mark.integration
WEST, EAST, SPLIT = 4.465, 4.487, 4.4761
SOUTH, NORTH = 51.401, 51.414
DAY = "2024-06-12"
RUN = {"bands": ["B04", "B08"], "scale": 4, "min_clear": 0.0}


def _common(a: xr.DataArray, b: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray]:
    """``a`` and ``b`` on the output pixels both have (same grid: equal coordinates)."""
    x = np.intersect1d(a.x.values, b.x.values)
    y = np.intersect1d(a.y.values, b.y.values)
    assert x.size and y.size, "no common pixels"
    return a.sel(x=x, y=y), b.sel(x=x, y=y)


def test_abutting_cubes_equal_one_cube_over_both(sample_url, dask_client, tmp_path):
    both = run_region((WEST, SOUTH, EAST, NORTH), DAY, out=str(tmp_path / "both.zarr"), client=dask_client, **RUN)
    west = run_region((WEST, SOUTH, SPLIT, NORTH), DAY, out=str(tmp_path / "w.zarr"), client=dask_client, **RUN)
    east = run_region((SPLIT, SOUTH, EAST, NORTH), DAY, out=str(tmp_path / "e.zarr"), client=dask_client, **RUN)
    assert west.attrs["model"] == both.attrs["model"] != "bicubic"  # a learned model: a wide receptive field
    assert west.attrs["consistency_projection"] is True and west.attrs["halo_pixels"] > 0
    for part in (west, east):
        got, want = _common(part.reflectance, both.reflectance)
        assert got.sizes["x"] > 0.3 * both.sizes["x"]
        np.testing.assert_allclose(got.values, want.values, rtol=0, atol=1e-5)
        got, want = _common(part.consistency, both.consistency)
        np.testing.assert_allclose(got.values, want.values, rtol=0, atol=1e-5)
    # and along the split the two halves agree on every pixel both computed: a mosaic has no seam
    a, b = _common(west.reflectance, east.reflectance)
    np.testing.assert_allclose(a.values, b.values, rtol=0, atol=1e-5)
