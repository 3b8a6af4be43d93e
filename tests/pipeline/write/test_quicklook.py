"""Quicklooks read a decimated view: they work in a process that could not hold one full frame.

A cube-like store with a 6144 x 6144 float32 frame (151 MB) is opened in a subprocess whose address space
is capped (``resource.setrlimit(RLIMIT_AS)``) at what it already uses plus 100 MB: the quicklook is made;
reading the full frame there fails with MemoryError (the control that shows the cap bites).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import xarray as xr

from tests.support.helpers import REPO

SIDE = 6144

CHILD = """
import resource, sys
import numpy as np, xarray as xr, zarr, dask, numcodecs, rasterio
from srcube.pipeline.write.quicklook import quicklook_png

def vm_bytes():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
cube = xr.open_zarr(sys.argv[1])
limit = vm_bytes() + 100 * 2**20
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
png = quicklook_png(cube, max_side=512)
print("quicklook", len(png))
try:
    # in this thread (no new thread stacks to map under the cap): the frame's own allocation is what fails
    cube.reflectance.isel(time=-1, band=0).compute(scheduler="synchronous")
    print("full frame read")
except MemoryError:
    print("full frame MemoryError")
"""


@pytest.fixture(scope="module")
def big_cube(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("big") / "big.zarr"
    y = da.arange(SIDE, chunks=1024, dtype=np.float32)[:, None] / SIDE
    x = da.arange(SIDE, chunks=1024, dtype=np.float32)[None, :] / SIDE
    frame = (0.1 + 0.2 * y * x)[None, None]
    ds = xr.Dataset({"reflectance": (("time", "band", "y", "x"), frame)},
                    coords={"band": np.array(["B08"], dtype=object), "time": [np.datetime64("2024-06-12", "ns")],
                            "y": np.arange(SIDE, dtype=np.float64)[::-1], "x": np.arange(SIDE, dtype=np.float64)})
    ds.to_zarr(out, zarr_format=3, consolidated=False)
    return out


def test_quicklook_under_a_memory_cap_smaller_than_a_frame(big_cube):
    assert SIDE * SIDE * 4 > 140 * 2**20  # one frame (144 MiB) is larger than the 100 MiB headroom below
    proc = subprocess.run([sys.executable, "-c", CHILD, str(big_cube)], cwd=REPO, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("quicklook ") and int(lines[0].split()[1]) > 1000
    assert lines[1] == "full frame MemoryError"  # the cap is real: the old full read could not work here
