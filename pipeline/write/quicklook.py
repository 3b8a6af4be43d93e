"""A small PNG quicklook of a cube: the last frame (or a given date), true colour when the bands allow, 2-98 % stretch.

It is read from the cube's overviews (:mod:`pipeline.write.overviews`) when it has them: the coarsest level
that still has ``max_side`` px, a few small chunks. A cube without overviews is read decimated: every
``step``-th pixel of each row and column, chunk by chunk, one chunk at a time. Either way memory stays at about
one chunk plus the small result, whatever the size of the frame (an orchestrating pod with little memory makes
quicklooks of cubes it could never hold).
"""

from __future__ import annotations

import numbers
import os
import warnings
from pathlib import Path

import numpy as np
import rasterio
import xarray as xr
from rasterio.io import MemoryFile

from srcube.pipeline.errors import InvalidOptionError, OutputNotWritableError
from srcube.pipeline.write.store import CubeStore

#: the longest side a quicklook may have: it is a preview (every band at full resolution: ``srcube export --cog``)
MAX_SIDE = 16384


def check_max_side(max_side: object) -> int:
    """``max_side`` if it is a whole number of pixels from 1 to :data:`MAX_SIDE`, else InvalidOptionError."""
    if isinstance(max_side, bool) or not isinstance(max_side, numbers.Integral) or not 1 <= int(max_side) <= MAX_SIDE:
        raise InvalidOptionError(f"the quicklook's size (its longest side in pixels) must be an integer from 1 to "
                                 f"{MAX_SIDE}, got {max_side!r}; e.g. 512 (CLI: --size 512)")
    return int(max_side)


def check_png_target(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path if a PNG can be written there (OutputNotWritableError: a folder in the way, no such
    folder, no permission), checked before the cube is read."""
    target = Path(path)
    if target.is_dir():
        raise OutputNotWritableError(f"{target} is a folder; give the PNG's file name, e.g. {target / 'quicklook.png'}")
    folder = target.parent
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise OutputNotWritableError(f"cannot write {target}: {folder} {what}; create the folder or give another path")
    if not os.access(folder, os.W_OK | os.X_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise OutputNotWritableError(f"cannot write {target}: no permission to write there; choose another path")
    return target


def write_quicklook(store: CubeStore, path: str | os.PathLike[str], max_side: int = 512,
                    date: str | None = None) -> Path:
    """Write :func:`cube_quicklook` as a PNG at ``path`` (its size and place checked before the cube is read)."""
    max_side = check_max_side(max_side)
    target = check_png_target(path)
    png = cube_quicklook(store, max_side, date)
    try:
        target.write_bytes(png)
    except OSError as exc:
        raise OutputNotWritableError(f"cannot write {target}: {exc}; choose another path or free space") from exc
    return target


def cube_quicklook(store: CubeStore, max_side: int = 512, date: str | None = None) -> bytes:
    """:func:`quicklook_png` of the complete cube at ``store``, from its overviews when it has them."""
    from srcube.pipeline.write.overviews import open_level

    max_side = check_max_side(max_side)
    return quicklook_png(store.open(), max_side, date, overview=open_level(store, max_side))


def quicklook_png(cube: xr.Dataset, max_side: int = 512, date: str | None = None,
                  overview: xr.Dataset | None = None) -> bytes:
    """PNG bytes of the cube's last time step, or of ``date`` (YYYY-MM-DD) (B04/B03/B02 or RED/NIR/NIR as RGB,
    else band 0), from ``overview`` (an overview level of the cube: :func:`overviews.open_level`) when given."""
    max_side = check_max_side(max_side)
    t = -1
    if date is not None:
        from srcube.pipeline.write.export import select_dates

        t = select_dates(cube, [date])[0]
    source = cube if overview is None else overview
    rgb = decimated(source, t, true_colour([str(b) for b in source.band.values]), max_side)
    img = stretched(rgb, *stretch_limits(rgb))
    with warnings.catch_warnings():
        # a PNG has no georeferencing; rasterio says so, and that is expected here
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with MemoryFile() as mem:
            with mem.open(driver="PNG", width=img.shape[2], height=img.shape[1], count=3, dtype="uint8") as dst:
                dst.write(img)
            return bytes(mem.read())


#: the bands shown as red, green and blue: true colour (or PROBA-V's RED/NIR/NIR), and false colour with the near
#: infrared as red (vegetation bright red); the first triple a cube has all bands of is used
COMPOSITES: dict[str, tuple[tuple[str, str, str], ...]] = {
    "true": (("B04", "B03", "B02"), ("RED", "NIR", "NIR")),
    "false": (("B08", "B04", "B03"), ("NIR", "RED", "BLUE")),
}


def composite_bands(bands: list[str], composite: str) -> list[str] | None:
    """The three bands of ``composite`` (:data:`COMPOSITES`) among ``bands``, or None when a band is missing."""
    return next((list(want) for want in COMPOSITES[composite] if set(want) <= set(bands)), None)


def true_colour(bands: list[str]) -> list[str]:
    """The quicklook's bands: true colour, or the first band three times (grey) when the cube lacks a true colour's."""
    return composite_bands(bands, "true") or [bands[0]] * 3


def decimated(source: xr.Dataset, t: int, bands: list[str], max_side: int) -> np.ndarray:
    """(3, y, x) float32: ``bands`` of time step ``t`` of ``source`` (the cube or an overview level), every ``step``-th
    pixel of each row and column so that the longest side is at most ``max_side``, read one chunk at a time."""
    refl = source.reflectance.isel(time=t)
    step = max(1, int(np.ceil(max(refl.sizes["y"], refl.sizes["x"]) / max_side)))
    small = refl.sel(band=bands).isel(y=slice(None, None, step), x=slice(None, None, step))
    # one chunk at a time in this thread: no thread pool, no full frame in memory
    return np.asarray(small.data.compute(scheduler="synchronous") if hasattr(small.data, "dask")
                      else small.values, dtype=np.float32)


def stretch_limits(rgb: np.ndarray) -> tuple[float, float]:
    """The quicklook's stretch: the 2nd and 98th percentiles of the finite values of all three bands together
    (0 and 1 when there are none), so that the bands keep their ratios (colours stay true)."""
    finite = rgb[np.isfinite(rgb)]
    return (float(np.percentile(finite, 2)), float(np.percentile(finite, 98))) if finite.size else (0.0, 1.0)


def stretched(rgb: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``rgb`` stretched linearly from ``lo``..``hi`` to 0..255 (uint8, clipped; no data black)."""
    return np.clip((np.nan_to_num(rgb, nan=lo) - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
