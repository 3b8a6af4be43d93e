"""The output grid of a region: UTM zone of the bbox centre, native resolution, native alignment."""

from __future__ import annotations

import math
from dataclasses import dataclass

from affine import Affine
from odc.geo import xy_
from odc.geo.geobox import GeoBox
from odc.geo.geom import BoundingBox, box

from srcube.pipeline.cells import CellBBox
from srcube.pipeline.params import BBox


def region_epsg(bbox: BBox) -> int:
    """The UTM zone a region's grid is in: a cell's own zone, else the zone of the bbox centre."""
    return bbox.epsg if isinstance(bbox, CellBBox) else utm_epsg(*bbox.center)


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the UTM zone containing (lon, lat): 326zz north, 327zz south.

    The Norway/Svalbard zone exceptions are not applied: the grid is a projection choice, not a
    product tiling, and the regular zones are valid there too.
    """
    zone = min(math.floor((lon + 180.0) / 6.0) + 1, 60)
    return (32600 if lat >= 0 else 32700) + zone


@dataclass(frozen=True)
class GridSpec:
    """A regular grid: CRS (EPSG), pixel size in metres and the sub-pixel anchor of its edges.

    ``anchor`` is the fractional pixel offset of pixel edges from the CRS origin, (0, 0) for edges
    on multiples of the resolution. Using the source's own anchor means no resampling on load.
    """

    epsg: int
    resolution: float
    anchor: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        if self.resolution <= 0 or not math.isfinite(self.resolution):
            raise ValueError(f"grid resolution must be a positive number, got {self.resolution}")
        if not all(0.0 <= a < 1.0 for a in self.anchor):
            raise ValueError(f"grid anchor fractions must be in [0, 1), got {self.anchor}")

    @classmethod
    def aligned_to(cls, epsg: int, resolution: float, origin: tuple[float, float]) -> GridSpec:
        """The grid of ``resolution`` whose pixel edges pass through ``origin`` (x, y)."""
        def frac(v: float) -> float:
            f = (v / resolution) % 1.0
            return 0.0 if min(f, 1.0 - f) < 1e-6 else f

        return cls(epsg, resolution, (frac(origin[0]), frac(origin[1])))

    def geobox(self, bbox: BBox) -> GeoBox:
        """The GeoBox covering ``bbox`` (lon/lat) on this grid; for a cell's bbox (:class:`CellBBox`) in the cell's
        zone, the cell's square itself."""
        if isinstance(bbox, CellBBox) and bbox.epsg == self.epsg:
            bounds = BoundingBox(*bbox.square)
        else:
            bounds = box(*bbox.as_tuple(), "EPSG:4326").to_crs(f"EPSG:{self.epsg}").boundingbox
        return GeoBox.from_bbox(bounds, f"EPSG:{self.epsg}", resolution=self.resolution,
                                anchor=xy_(*self.anchor))


def finer_geobox(geobox: GeoBox, ratio: int) -> GeoBox:
    """``geobox`` with pixels ``ratio`` times smaller and the same outer edges: each of its pixels
    covers exactly ``ratio x ratio`` pixels of the result."""
    ny, nx = geobox.shape
    return GeoBox((ny * ratio, nx * ratio), geobox.affine @ Affine.scale(1.0 / ratio), geobox.crs)
