"""A global, deterministic grid of square cells per UTM zone: how srcube cuts an area into cubes.

Every UTM zone (1-60, north and south) is cut into squares of ``size_m`` metres whose edges lie on multiples of
``size_m`` in the zone's own coordinates (EPSG:326zz north, EPSG:327zz south, as Sentinel-2 tiles use). A cell is
named by its zone, hemisphere, size and row/column: ``31N-50100-00113-00012`` is the square
``[col * size, (col + 1) * size) x [row * size, (row + 1) * size)`` of EPSG:32631 with ``size`` = 50,100 m. The name
says everything, so ids round-trip (:meth:`Cell.parse`) and the same area always gives the same cells.

Alignment: the size is a whole multiple of :data:`ALIGN_M` (300 m: 10, 20, 60, 100 and 300 all divide it) and the
edges are on multiples of the size, so every cell edge is a pixel edge of Sentinel-2's 10 m and 20 m grids (every
tile's corner is on a multiple of 20 m: ``k * 100 km -/+ 20 m``) and each cell holds whole 60, 100 and 300 m pixels.
A cell's cube is the cell's square exactly; cubes of neighbouring cells of a zone abut without overlap.

An area (a lon/lat bbox, a GeoJSON Polygon/MultiPolygon/Feature/FeatureCollection, or a shapely geometry) gives the
cells of every zone it reaches: the area is cut at the zone meridians and at the equator, each piece projected to its
zone (edges densified first), and the cells whose square overlaps the piece with a non-zero area are kept (cells
wholly outside a polygon are skipped). Across a zone border the cells of the two zones overlap on the ground (each
cell is a square of its own zone's grid); :meth:`Cell.owned` is the part of a cell that its zone owns, which is what
a mosaic takes from it. A bbox whose ``min_lon`` is greater than its ``max_lon`` crosses the antimeridian, and so
does a polygon whose longitudes span more than 180 degrees (its negative longitudes are taken as +360). Beyond the
UTM latitude limits (80 S, 84 N) there are no cells: :class:`~srcube.pipeline.errors.InvalidAreaError`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeAlias

import numpy as np
import shapely
from pyproj import Transformer
from shapely.geometry import MultiPolygon, Polygon, box, shape
from shapely.geometry.base import BaseGeometry

from srcube.pipeline.errors import InvalidAreaError
from srcube.pipeline.params import UTM_MAX_LAT, UTM_MIN_LAT, BBox

#: cell sizes are whole multiples of this (m): Sentinel-2's 10/20/60 m and PROBA-V's 100/300 m pixels divide it
ALIGN_M = 300
#: the default cell size (km): about 50 km, a whole number of 300 m steps (167 x 300 m)
DEFAULT_CELL_KM = 50.1
#: the smallest and largest cell sizes (km): below, cubes are a few pixels; above, a cell is wider than a zone
MIN_CELL_KM, MAX_CELL_KM = 0.3, 300.0
#: lon/lat edges are densified to this step (degrees) before they are projected
_DENSIFY_DEG = 0.05
_ID_RE = re.compile(r"^(\d{2})([NS])-(\d+)-(\d{5,})-(\d{5,})$")


def cell_size_m(cell_km: float) -> int:
    """The cell size in metres for ``cell_km``: the nearest whole multiple of :data:`ALIGN_M` (InvalidAreaError
    outside [:data:`MIN_CELL_KM`, :data:`MAX_CELL_KM`])."""
    if isinstance(cell_km, bool) or not isinstance(cell_km, (int, float)) or not math.isfinite(cell_km):
        raise InvalidAreaError(f"cell_km must be a number of kilometres such as {DEFAULT_CELL_KM}, got {cell_km!r}")
    if not MIN_CELL_KM <= cell_km <= MAX_CELL_KM:
        raise InvalidAreaError(f"cell_km={cell_km} is outside [{MIN_CELL_KM}, {MAX_CELL_KM}] km; give a cell size in "
                               "that range (default about 50 km)")
    return max(1, round(cell_km * 1000 / ALIGN_M)) * ALIGN_M


@dataclass(frozen=True, order=True)
class Cell:
    """One square of the grid: UTM ``zone`` (1-60), hemisphere (``north``), ``size_m`` and its ``row``/``col``
    (the square's lower-left corner is ``(col * size_m, row * size_m)`` in the zone's CRS)."""

    zone: int
    north: bool
    size_m: int
    row: int
    col: int

    def __post_init__(self) -> None:
        if not 1 <= self.zone <= 60:
            raise InvalidAreaError(f"UTM zone must be 1-60, got {self.zone}")
        if self.size_m <= 0 or self.size_m % ALIGN_M:
            raise InvalidAreaError(f"cell size must be a positive multiple of {ALIGN_M} m, got {self.size_m}")
        if self.row < 0 or self.col < 0:
            raise InvalidAreaError(f"cell row and column must not be negative, got {self.row}, {self.col}")

    @property
    def epsg(self) -> int:
        return (32600 if self.north else 32700) + self.zone

    @property
    def id(self) -> str:
        return f"{self.zone:02d}{'N' if self.north else 'S'}-{self.size_m}-{self.row:05d}-{self.col:05d}"

    def __str__(self) -> str:
        return self.id

    @classmethod
    def parse(cls, cell_id: str) -> Cell:
        """The cell of an id (:attr:`id`); InvalidAreaError for anything else."""
        m = _ID_RE.match(cell_id) if isinstance(cell_id, str) else None
        if m is None:
            raise InvalidAreaError(f"{cell_id!r} is not a cell id such as '31N-50100-00113-00012' "
                                   "(zone, hemisphere, size in m, row, column)")
        return cls(int(m[1]), m[2] == "N", int(m[3]), int(m[4]), int(m[5]))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of the square in the zone's CRS (metres)."""
        s = self.size_m
        return (float(self.col * s), float(self.row * s), float((self.col + 1) * s), float((self.row + 1) * s))

    def footprint(self) -> Polygon:
        """The square in lon/lat (edges densified, so the outline follows the projection)."""
        x0, y0, x1, y1 = self.bounds
        step = max(self.size_m / 20, 100.0)
        square = shapely.segmentize(box(x0, y0, x1, y1), step)
        lon, lat = _to_lonlat(self.epsg).transform(*square.exterior.xy)
        return Polygon(zip(lon, lat, strict=True))

    def bbox(self) -> BBox:
        """The lon/lat bounding box of the square (what a catalog search of the cell asks for)."""
        west, south, east, north = self.footprint().bounds
        return BBox(max(west, -180.0), max(south, UTM_MIN_LAT), min(east, 180.0), min(north, UTM_MAX_LAT))

    def region(self) -> CellBBox:
        """The cell as a run's region: its lon/lat bbox (what the catalog is searched for) that knows the exact
        square, so the run's grid is the square in the cell's zone (see :class:`CellBBox`)."""
        return CellBBox(*self.bbox().as_tuple(), cell=self.id)

    def owned(self) -> BaseGeometry:
        """The part of the cell its zone owns (lon/lat): its footprint within the zone's 6 degree strip and
        hemisphere."""
        return self.footprint().intersection(_strip(self.zone, self.north))


@dataclass(frozen=True)
class CellBBox(BBox):
    """A cell's lon/lat bbox (:meth:`Cell.bbox`) that also names the cell: a run over it puts its grid on the cell's
    square in the cell's UTM zone (:meth:`~srcube.pipeline.assemble.grid.GridSpec.geobox`), not on the UTM zone of
    the bbox centre and the bbox's projected bounds, so the cubes of neighbouring cells abut exactly."""

    cell: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        Cell.parse(self.cell)

    @property
    def epsg(self) -> int:
        return Cell.parse(self.cell).epsg

    @property
    def square(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of the cell in its zone's CRS."""
        return Cell.parse(self.cell).bounds


def _strip(zone: int, north: bool) -> Polygon:
    west = -180.0 + 6.0 * (zone - 1)
    return box(west, 0.0 if north else UTM_MIN_LAT, west + 6.0, UTM_MAX_LAT if north else 0.0)


@lru_cache(maxsize=256)
def _to_lonlat(epsg: int) -> Transformer:
    return Transformer.from_crs(epsg, 4326, always_xy=True)


@lru_cache(maxsize=256)
def _to_utm(epsg: int) -> Transformer:
    return Transformer.from_crs(4326, epsg, always_xy=True)


# --- areas -----------------------------------------------------------------------------------------------


AreaLike: TypeAlias = BBox | Sequence[float] | str | Mapping[str, Any] | BaseGeometry


def parse_area(area: AreaLike) -> BaseGeometry:
    """An area as one lon/lat shapely geometry in [-180, 180]: a bbox (four numbers, a string or a :class:`BBox`;
    ``min_lon > max_lon`` crosses the antimeridian), a GeoJSON geometry, Feature or FeatureCollection (a dict, or its
    JSON text) of polygons, or a shapely (Multi)Polygon. InvalidAreaError for anything else, for an empty area and for
    latitudes beyond the UTM limits."""
    geom = _geometry(area)
    if geom.is_empty or geom.area <= 0:
        raise InvalidAreaError(f"the area {_show(area)} is empty or has no area; give a polygon or a bbox with extent")
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    geom = _unwrap(geom)
    west, south, east, north = geom.bounds
    if south < UTM_MIN_LAT or north > UTM_MAX_LAT:
        raise InvalidAreaError(
            f"the area reaches latitudes [{south:g}, {north:g}], beyond the UTM limits [{UTM_MIN_LAT:g}, "
            f"{UTM_MAX_LAT:g}] that srcube's cell grid covers (polar areas need a polar grid); clip it to those "
            "latitudes")
    if west < -180.0 or east > 180.0:
        raise InvalidAreaError(f"the area's longitudes [{west:g}, {east:g}] leave [-180, 180]")
    return geom


def _show(area: object) -> str:
    text = repr(area)
    return text if len(text) <= 120 else text[:117] + "..."


def _geometry(area: AreaLike) -> BaseGeometry:
    if isinstance(area, BaseGeometry):
        return area
    if isinstance(area, str) and str(area).lstrip().startswith("{"):
        try:
            area = json.loads(area)
        except ValueError as exc:
            raise InvalidAreaError(f"the area is not valid GeoJSON: {exc}") from None
    if isinstance(area, Mapping):
        return _geojson(area)
    if isinstance(area, (str, Sequence, BBox)) or hasattr(area, "tolist"):
        values = BBox.parse(area).as_tuple() if not _crosses_antimeridian(area) else _raw_bbox(area)
        west, south, east, north = values
        if west > east:  # across the antimeridian: two boxes
            return MultiPolygon([box(west, south, 180.0, north), box(-180.0, south, east, north)])
        return box(west, south, east, north)
    raise InvalidAreaError(f"the area must be a bbox (min_lon, min_lat, max_lon, max_lat), a GeoJSON Polygon or "
                           f"MultiPolygon (geometry, Feature or FeatureCollection), got {type(area).__name__}")


def _raw_bbox(area: Any) -> tuple[float, float, float, float]:
    parts = [p for p in re.split(r"[,\s]+", area.strip()) if p] if isinstance(area, str) else list(area)
    try:
        west, south, east, north = (float(p) for p in parts)
    except (TypeError, ValueError):
        raise InvalidAreaError(f"bbox must be four numbers (min_lon, min_lat, max_lon, max_lat), got {area!r}") \
            from None
    # the two halves are checked as ordinary boxes (ranges, order of the latitudes, extent)
    BBox(west, south, 180.0, north)
    BBox(-180.0, south, east, north)
    return west, south, east, north


def _crosses_antimeridian(area: Any) -> bool:
    """Whether a bbox-like value is four numbers with min_lon > max_lon, both inside [-180, 180]."""
    try:
        parts = [p for p in re.split(r"[,\s]+", area.strip()) if p] if isinstance(area, str) else (
            list(area.as_tuple()) if isinstance(area, BBox) else list(area))
        west, _, east, _ = (float(p) for p in parts)
    except (TypeError, ValueError, AttributeError):
        return False
    return -180.0 <= east < west <= 180.0


def _geojson(doc: Mapping[str, Any]) -> BaseGeometry:
    kind = doc.get("type")
    if kind == "FeatureCollection":
        parts = [_geojson(f) for f in doc.get("features") or []]
        if not parts:
            raise InvalidAreaError("the area's FeatureCollection has no features")
        return shapely.union_all(parts)
    if kind == "Feature":
        if not isinstance(doc.get("geometry"), Mapping):
            raise InvalidAreaError("the area's Feature has no geometry")
        return _geojson(doc["geometry"])
    if kind not in ("Polygon", "MultiPolygon"):
        raise InvalidAreaError(f"the area's GeoJSON must be a Polygon or MultiPolygon (or a Feature of one), "
                               f"got {kind!r}")
    try:
        return shape(doc)
    except (ValueError, TypeError, AttributeError, IndexError) as exc:
        raise InvalidAreaError(f"the area's GeoJSON {kind} is malformed: {exc}") from None


def _unwrap(geom: BaseGeometry) -> BaseGeometry:
    """A polygon drawn across the antimeridian with longitudes jumping from 180 to -180 (longitudes spanning more
    than 180 degrees) as its two halves in [-180, 180]."""
    polys = list(geom.geoms) if hasattr(geom, "geoms") else [geom]
    out: list[BaseGeometry] = []
    for poly in polys:
        west, _, east, _ = poly.bounds
        if east - west <= 180.0:
            out.append(poly)
            continue
        shifted = shapely.transform(poly, lambda xy: xy + [[360.0, 0.0]] * (xy[:, :1] < 0))
        out.append(shifted.intersection(box(-180.0, -90.0, 180.0, 90.0)))
        out.append(shapely.affinity.translate(shifted.intersection(box(180.0, -90.0, 540.0, 90.0)), -360.0))
    return shapely.union_all([g for g in out if not g.is_empty])


def zones_of(geom: BaseGeometry) -> list[tuple[int, bool]]:
    """The (zone, north) pieces an area reaches, in grid order."""
    west, south, east, north = geom.bounds
    first = min(math.floor((west + 180.0) / 6.0) + 1, 60)
    last = min(math.floor((east + 180.0) / 6.0) + 1, 60)
    hemis = [h for h in (False, True) if (north > 0.0 if h else south < 0.0)]
    return [(z, h) for z in range(first, last + 1) for h in hemis if geom.intersects(_strip(z, h))
            and geom.intersection(_strip(z, h)).area > 0]


def iter_cells(area: AreaLike, cell_km: float = DEFAULT_CELL_KM) -> Iterator[Cell]:
    """The cells of ``area`` (see the module docstring), lazily, in a fixed order: zone, hemisphere (south first),
    row, column. A continent at 1 km is millions of cells: nothing here holds them all."""
    for zone, north, size, row, cols in _rows(area, cell_km):
        for col in cols:
            yield Cell(zone, north, size, row, int(col))


def count_cells(area: AreaLike, cell_km: float = DEFAULT_CELL_KM) -> int:
    """How many cells :func:`iter_cells` gives, without making them (row by row)."""
    return sum(len(cols) for *_, cols in _rows(area, cell_km))


def _rows(area: AreaLike, cell_km: float) -> Iterator[tuple[int, bool, int, int, np.ndarray]]:
    """(zone, north, size, row, the columns of the row's cells) of every row of cells ``area`` reaches."""
    size = cell_size_m(cell_km)
    geom = parse_area(area)
    for zone, north in zones_of(geom):
        piece = geom.intersection(_strip(zone, north))
        epsg = (32600 if north else 32700) + zone
        projected = shapely.transform(shapely.segmentize(piece, _DENSIFY_DEG),
                                      lambda xy, e=epsg: _project(xy, e))
        shapely.prepare(projected)
        x0, y0, x1, y1 = projected.bounds
        for row in range(max(0, math.floor(y0 / size)), math.ceil(y1 / size)):
            # the piece's extent along this row of cells: only those columns are tried
            band = projected.intersection(box(x0, row * size, x1, (row + 1) * size))
            if band.is_empty or band.area <= 0:
                continue
            bx0, _, bx1, _ = band.bounds
            cols = np.arange(max(0, math.floor(bx0 / size)), math.ceil(bx1 / size))
            squares = shapely.box(cols * size, row * size, (cols + 1) * size, (row + 1) * size)
            # vectorised over the row: squares wholly inside, then the edge ones that overlap with an area
            shapely.prepare(band)
            inside = shapely.contains_properly(band, squares)
            edge = ~inside & shapely.intersects(band, squares)
            edge[edge] = shapely.area(shapely.intersection(band, squares[edge])) > 0
            yield zone, north, size, row, cols[inside | edge]


def _project(xy: Any, epsg: int) -> Any:
    x, y = _to_utm(epsg).transform(xy[:, 0], xy[:, 1])
    return np.column_stack([x, y])


def cells_of(area: AreaLike, cell_km: float = DEFAULT_CELL_KM) -> list[Cell]:
    """:func:`iter_cells` as a list."""
    return list(iter_cells(area, cell_km))
