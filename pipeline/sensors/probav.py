"""PROBA-V: Terrascope archive products (status-map clearance) and the Kelvins imgset layout.

Archive products (Collection 2 top-of-canopy syntheses, served as COGs by Terrascope) have one
asset per band (BLUE, RED, NIR, SWIR) with TOC reflectance = DN / 2000 unless ``raster:bands`` says
otherwise, and a status map ``SM`` whose bits say (PROBA-V Products User Manual; ESA SNAP's
``ProbaVFlags`` decodes them the same way):

* bits 0-2: 000 clear, 001 cloud shadow, 010 undefined, 011 cloud, 100 snow/ice;
* bit 3: land (1) or sea (0);
* bits 4-7: radiometric quality good (1) for SWIR, NIR, RED, BLUE.

srcube's QA classes are the bit 0-2 codes; a pixel is clear for a set of bands when its code is
in the clear classes *and* the quality bit of every requested band is set. The grid is the
products' own plate carree (1/336 degree for 333 m, 1/1008 degree for 100 m).

The Kelvins competition release (``{train,test}/{RED,NIR}/imgsetNNNN/LR###.png, QM###.png, HR.png,
SM.png`` and ``norm.csv``) is read by :func:`read_imgset`; its frames carry neither location nor
date, so :func:`imgset_stack` places them on a nominal grid (documented in the stack's attrs).
"""

from __future__ import annotations

import datetime as dt
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pystac

from srcube.pipeline.errors import InvalidDataError
from srcube.pipeline.sensors.bands import BandInfo, BandVocabulary
from srcube.pipeline.sensors.base import SensorProfile

if TYPE_CHECKING:  # xarray, rasterio and odc-geo are imported where pixels are read: the profile itself is light
    import xarray as xr

LR_DEG = 1.0 / 336.0  # 333 m products
HR_DEG = 1.0 / 1008.0  # 100 m products
TOC_SCALE = 1.0 / 2000.0

VOCABULARY = BandVocabulary(
    sensor="proba-v",
    bands=(
        BandInfo("BLUE", 333, ("blue", "TOC-BLUE", "TOC_BLUE", "B0")),
        BandInfo("RED", 333, ("red", "TOC-RED", "TOC_RED", "B2")),
        BandInfo("NIR", 333, ("nir", "TOC-NIR", "TOC_NIR", "B3")),
        BandInfo("SWIR", 333, ("swir", "swir16", "TOC-SWIR", "TOC_SWIR", "MIR")),
        BandInfo("SM", 333, ("status_map", "status-map", "STATUS_MAP", "QUALITY"), kind="qa"),
    ),
    qa_band="SM",
    default_bands=("RED", "NIR"),
)

SM_CLASSES: dict[int, str] = {0: "clear", 1: "cloud shadow", 2: "undefined", 3: "cloud", 4: "snow/ice"}
#: status-map bit of "radiometric quality good" per band
QUALITY_BIT = {"SWIR": 4, "NIR": 5, "RED": 6, "BLUE": 7}


class ProbaV(SensorProfile):
    name = "proba-v"
    vocabulary = VOCABULARY
    grid = "native"
    collection_markers = ("probav", "proba-v", "proba_v")
    platform_markers = ("proba-v",)
    default_clear = (0,)
    qa_classes: ClassVar[dict[int, str]] = SM_CLASSES
    harmonize_modes = ("raster", "none")

    def scaling(self, item: pystac.Item, key: str, harmonize: str) -> tuple[float, float, float | None]:
        rb = item.assets[key].extra_fields.get("raster:bands") or [{}]
        b0 = rb[0] if isinstance(rb, list) and rb else {}
        nodata = float(b0["nodata"]) if b0.get("nodata") is not None else -1.0
        offset = float(b0.get("offset", 0.0)) if harmonize != "none" else 0.0
        return float(b0.get("scale", TOC_SCALE)), offset, nodata

    def qa_class(self, qa: xr.DataArray) -> xr.DataArray:
        return qa.astype("int32") & 7

    def clear_mask(self, qa: xr.DataArray, classes: Sequence[int], bands: Sequence[str]) -> xr.DataArray:
        code = qa.astype("int32")
        clear = (code & 7).isin(list(classes))
        for band in bands:
            if band in QUALITY_BIT:
                clear = clear & ((code >> QUALITY_BIT[band]) & 1).astype(bool)
        return clear

    def clearance_weight(self, qa: xr.DataArray, classes: Sequence[int]) -> xr.DataArray:
        code = qa.astype("int32") & 7
        weight = code.isin(list(classes)).astype("float32")
        if 2 not in classes:  # "undefined" is half-trusted
            weight = weight + (code == 2).astype("float32") * 0.5
        return weight


PROBAV = ProbaV()


# --- the Kelvins imgset layout -----------------------------------------------------------------


def _read_png(path: Path) -> np.ndarray:
    import rasterio

    with warnings.catch_warnings():
        # a PNG has no georeferencing: rasterio says so, and that is expected here
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            return src.read(1)


def write_png(path: Path, array: np.ndarray) -> None:
    """Write a single-band 8- or 16-bit PNG (the Kelvins format)."""
    import rasterio

    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="PNG", width=array.shape[1], height=array.shape[0], count=1,
                           dtype=array.dtype) as dst:
            dst.write(array, 1)


_LR = re.compile(r"^LR(\d{3})\.png$")


@dataclass
class KelvinsImgset:
    """One Kelvins imgset: LR frames (T, 128, 128) uint16, their clear masks, and HR/SM if present."""

    path: Path
    name: str
    band: str | None  # RED or NIR (from the parent folder), None if unknown
    frame_ids: list[str]
    lr: np.ndarray
    qm: np.ndarray | None
    hr: np.ndarray | None
    sm: np.ndarray | None
    norm: float | None = None

    @property
    def clearance(self) -> np.ndarray:
        """Fraction of clear pixels per LR frame (all 1 when there are no QM files)."""
        if self.qm is None:
            return np.ones(len(self.frame_ids))
        return self.qm.reshape(len(self.frame_ids), -1).mean(axis=1)

    def clearest(self, k: int) -> list[int]:
        """Indices of the ``k`` clearest frames, clearest first (HighRes-net's ranking)."""
        order = np.argsort(-self.clearance, kind="stable")
        return [int(i) for i in order[:k]]


def read_norm(path: str | Path) -> dict[str, float]:
    """``norm.csv``: ``imgsetNNNN <baseline cPSNR>`` per line, no header."""
    out: dict[str, float] = {}
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            out[parts[0]] = float(parts[1])
    return out


def read_imgset(path: str | Path, *, require_qm: bool = True, norm: dict[str, float] | None = None) -> KelvinsImgset:
    """Read one imgset folder. Without QM files, ``require_qm=False`` treats every pixel as clear."""
    folder = Path(path)
    if not folder.is_dir():
        raise InvalidDataError(f"Kelvins imgset {folder} is not a directory")
    ids = sorted(m.group(1) for f in folder.iterdir() if (m := _LR.match(f.name)))
    if not ids:
        raise InvalidDataError(f"{folder} holds no LR###.png frames; is it a Kelvins imgset?")
    lr = np.stack([_read_png(folder / f"LR{i}.png") for i in ids]).astype(np.uint16)
    qm_files = [folder / f"QM{i}.png" for i in ids]
    missing = [f.name for f in qm_files if not f.exists()]
    if missing and require_qm:
        raise InvalidDataError(f"{folder} lacks {len(missing)} clear masks ({', '.join(missing[:3])}...); "
                               "pass require_qm=False to treat all pixels as clear")
    qm = None if missing else np.stack([_read_png(f) > 0 for f in qm_files])
    hr = _read_png(folder / "HR.png").astype(np.uint16) if (folder / "HR.png").exists() else None
    sm = _read_png(folder / "SM.png") > 0 if (folder / "SM.png").exists() else None
    band = folder.parent.name if folder.parent.name in ("RED", "NIR") else None
    if norm is None:
        for parent in folder.parents:
            if (parent / "norm.csv").exists():
                norm = read_norm(parent / "norm.csv")
                break
    return KelvinsImgset(folder, folder.name, band, ids, lr, qm, hr, sm, (norm or {}).get(folder.name))


def list_imgsets(root: str | Path, split: str | None = None, band: str | None = None) -> list[Path]:
    """Imgset folders under a Kelvins root (``root/{split}/{band}/imgset*``), sorted."""
    root = Path(root)
    pattern = f"{split or '*'}/{band or '*'}/imgset*"
    return sorted(p for p in root.glob(pattern) if p.is_dir())


def imgset_stack(imgset: KelvinsImgset, *, north_west: tuple[float, float], start: dt.date,
                 band: str | None = None) -> xr.Dataset:
    """The imgset as a srcube stack on a nominal grid: EPSG:4326, 1/336 degree pixels, upper-left
    corner at ``north_west`` (lon, lat) snapped to that grid; frame ``i`` stamped ``start`` + i
    minutes (the release has no dates). Reflectance = DN / 65535, as the competition scores it.
    """
    import xarray as xr
    from affine import Affine
    from odc.geo.geobox import GeoBox
    from odc.geo.xr import xr_coords

    name = band or imgset.band or "NIR"
    t, h, w = imgset.lr.shape
    lon0 = np.floor(north_west[0] / LR_DEG) * LR_DEG
    lat0 = np.ceil(north_west[1] / LR_DEG) * LR_DEG
    gbox = GeoBox((h, w), Affine(LR_DEG, 0.0, lon0, 0.0, -LR_DEG, lat0), "EPSG:4326")
    coords = {str(k): v for k, v in xr_coords(gbox, crs_coord_name="spatial_ref").items()}
    times = np.array([np.datetime64(start) + np.timedelta64(i, "m") for i in range(t)], dtype="datetime64[ns]")
    refl = imgset.lr.astype(np.float32)[:, None] / np.float32(65535.0)
    clear = imgset.qm if imgset.qm is not None else np.ones((t, h, w), bool)
    ds = xr.Dataset(
        {"reflectance": (("time", "band", "y", "x"), refl),
         # status-map codes: land, all bands of good quality, and clear (000) or cloud (011) per QM
         "qa": (("time", "y", "x"), np.where(clear, 0xF8, 0xFB).astype(np.uint8)),
         "clear": (("time", "y", "x"), clear)},
        coords={"time": times, "band": [name], **coords,
                "items": ("time", [f"{imgset.name}/LR{i}" for i in imgset.frame_ids])},
    )
    ds.attrs.update(sensor="proba-v", grid_epsg=4326, resolution=LR_DEG,
                    georeferencing="nominal: Kelvins imgsets carry no location; placed at the bbox's "
                                   "north-west corner on the 1/336 degree grid",
                    source=str(imgset.path))
    return ds


def kelvins_stack(imgset_dir: str, bands: Sequence[str] | None, region: Any, days: Any, tile: int
                  ) -> tuple[xr.Dataset, str, int]:
    """The stack of a Kelvins imgset for a run (catalog ``kelvins:/path/imgset``): (stack chunked by
    ``tile``, its band, frames found). One band per imgset, RED or NIR."""
    from srcube.pipeline.errors import UnknownBandError

    imgset = read_imgset(imgset_dir, require_qm=False)
    band = tuple(bands) if bands else (imgset.band or "NIR",)
    if len(band) != 1 or band[0] not in ("RED", "NIR"):
        raise UnknownBandError(f"a Kelvins imgset holds one band (RED or NIR; this one: {imgset.band}), "
                               f"got {list(band)}")
    stack = imgset_stack(imgset, north_west=(region.min_lon, region.max_lat), start=days.start, band=band[0])
    return stack.drop_vars("clear").chunk({"time": 1, "y": tile, "x": tile}), band[0], len(imgset.frame_ids)
