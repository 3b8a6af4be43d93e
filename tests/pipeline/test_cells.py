"""The global cell grid (pipeline/cells.py): alignment, ids, areas cut into cells across zones, hemispheres and the
antimeridian, and property tests: the cells of an area cover it and do not overlap within a zone, ids round-trip,
the same area always gives the same cells."""

from __future__ import annotations

import json
import math

import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyproj import Transformer
from shapely.geometry import box

from srcube.pipeline import errors
from srcube.pipeline.cells import (
    ALIGN_M,
    DEFAULT_CELL_KM,
    Cell,
    CellBBox,
    cell_size_m,
    cells_of,
    iter_cells,
    parse_area,
    zones_of,
)

SAMPLE_AREA = (4.47, 51.405, 4.485, 51.415)


def _projected(geom: shapely.Geometry, epsg: int) -> shapely.Geometry:
    t = Transformer.from_crs(4326, epsg, always_xy=True)
    return shapely.transform(shapely.segmentize(geom, 0.01), lambda xy: __import__("numpy").column_stack(
        t.transform(xy[:, 0], xy[:, 1])))


def test_cell_sizes_are_whole_multiples_of_every_grid_pixel():
    assert cell_size_m(DEFAULT_CELL_KM) == 50_100
    assert cell_size_m(1) == 900 and cell_size_m(1.2) == 1200 and cell_size_m(0.3) == 300
    for km in (0.3, 0.9, 1, 7.7, 50, DEFAULT_CELL_KM, 100, 300):
        size = cell_size_m(km)
        assert size % ALIGN_M == 0
        assert all(size % px == 0 for px in (10, 20, 60, 100, 300))
    for bad in (0.1, 301, -5, float("nan"), "50", True, None):
        with pytest.raises(errors.InvalidAreaError, match="cell_km"):
            cell_size_m(bad)  # type: ignore[arg-type]


def test_a_cell_is_a_square_on_sentinel2_pixel_edges():
    cell = Cell.parse("31N-50100-00113-00012")
    assert (cell.zone, cell.north, cell.size_m, cell.row, cell.col) == (31, True, 50100, 113, 12)
    assert cell.epsg == 32631
    x0, y0, x1, y1 = cell.bounds
    assert (x1 - x0, y1 - y0) == (50100, 50100)
    # Sentinel-2 tiles' corners: 100 km multiples -20 m (x) / +20 m (y); every 10 and 20 m pixel edge is on 20 m
    for edge in (x0, y0, x1, y1):
        assert edge % 20 == 0 and edge % 60 == 0
    assert Cell.parse("60S-900-11110-00007").epsg == 32760
    for bad in ("31N-50100-113-12", "61N-900-00001-00001", "31X-900-00001-00001", "31N-1000-00001-00001",
                "../31N-900-00001-00001", 31):
        with pytest.raises(errors.InvalidAreaError):
            Cell.parse(bad)  # type: ignore[arg-type]


def test_a_cells_region_is_its_lonlat_bbox_and_knows_its_square():
    cell = Cell.parse("31N-900-06329-00669")
    region = cell.region()
    assert isinstance(region, CellBBox) and region.cell == cell.id and region.epsg == 32631
    assert region.square == cell.bounds
    # the bbox covers the square's footprint
    assert box(*region.as_tuple()).buffer(1e-9).contains(cell.footprint())


def test_the_sample_area_gives_six_cells_of_0_9_km():
    cells = cells_of(SAMPLE_AREA, 0.9)
    assert [c.id for c in cells] == ["31N-900-06328-00669", "31N-900-06328-00670", "31N-900-06329-00669",
                                     "31N-900-06329-00670", "31N-900-06330-00669", "31N-900-06330-00670"]


def test_polygons_skip_cells_wholly_outside():
    # a thin diagonal band over the sample area: fewer cells than its bbox
    band = shapely.Polygon([(4.46, 51.40), (4.47, 51.40), (4.52, 51.43), (4.51, 51.43)])
    geojson = json.loads(shapely.to_geojson(band))
    in_polygon = {c.id for c in cells_of(geojson, 0.9)}
    in_bbox = {c.id for c in cells_of(band.bounds, 0.9)}
    assert in_polygon < in_bbox
    projected = _projected(band, 32631)
    for cid in in_bbox - in_polygon:
        assert projected.intersection(box(*Cell.parse(cid).bounds)).area == 0
    feature = {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, "geometry": geojson}]}
    assert {c.id for c in cells_of(feature, 0.9)} == in_polygon
    assert {c.id for c in cells_of(json.dumps(geojson), 0.9)} == in_polygon


def test_areas_across_zones_hemispheres_and_the_antimeridian():
    # 6 E is the border of zones 31 and 32
    zones = {c.zone for c in cells_of((5.9, 45.0, 6.1, 45.1), 5)}
    assert zones == {31, 32}
    assert {c.north for c in cells_of((10.0, -0.1, 10.1, 0.1), 5)} == {True, False}
    across = cells_of((179.9, -16.2, -179.9, -16.1), 3)  # min_lon > max_lon: across the antimeridian
    assert {c.zone for c in across} == {60, 1} and all(not c.north for c in across)
    # the same area drawn as one polygon whose longitudes jump from 180 to -180
    ring = [(179.9, -16.2), (-179.9, -16.2), (-179.9, -16.1), (179.9, -16.1), (179.9, -16.2)]
    polygon = {"type": "Polygon", "coordinates": [ring]}
    assert cells_of(polygon, 3) == across
    assert zones_of(parse_area((179.9, -16.2, -179.9, -16.1))) == [(1, False), (60, False)]


@pytest.mark.parametrize("area", [(0.0, 83.9, 1.0, 84.5), (0.0, -80.5, 1.0, -79.0),
                                  {"type": "Polygon", "coordinates": [[(0, 85), (1, 85), (1, 86), (0, 85)]]}])
def test_beyond_the_utm_latitudes_is_a_clear_error(area):
    with pytest.raises((errors.InvalidAreaError, errors.InvalidBBoxError), match="UTM"):
        cells_of(area, 10)


@pytest.mark.parametrize("area, match", [
    ({"type": "Point", "coordinates": [4.5, 51.4]}, "Polygon or MultiPolygon"),
    ({"type": "Polygon", "coordinates": [[(4, 51), (4, 51), (4, 51), (4, 51)]]}, "no area"),
    ("{not json", "not valid GeoJSON"),
    ({"type": "FeatureCollection", "features": []}, "no features"),
    ((4.5, 51.4, 4.5), "4 numbers"),
    (object(), "bbox"),
])
def test_bad_areas_are_typed_errors(area, match):
    with pytest.raises((errors.InvalidAreaError, errors.InvalidBBoxError), match=match):
        cells_of(area, 10)


def test_cells_are_enumerated_lazily():
    europe = iter_cells((-10.0, 35.0, 30.0, 70.0), 1)  # millions of 900 m cells: nothing is listed up front
    first = [next(europe) for _ in range(3)]
    assert [c.zone for c in first] == [29, 29, 29]


lons = st.floats(-179.5, 179.0, allow_nan=False)
lats = st.floats(-79.0, 83.0, allow_nan=False)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lon=lons, lat=lats, w=st.floats(0.01, 0.6), h=st.floats(0.01, 0.5), km=st.sampled_from([0.9, 3, 10, 25]))
def test_cells_cover_the_area_without_overlap_and_ids_round_trip(lon, lat, w, h, km):
    area = (lon, lat, min(lon + w, 180.0), min(lat + h, 84.0))
    cells = cells_of(area, km)
    assert cells == cells_of(area, km)  # deterministic
    assert cells == sorted(cells) and len(set(cells)) == len(cells)
    for c in cells:
        assert Cell.parse(c.id) == c
    geom = parse_area(area)
    for zone, north in zones_of(geom):
        epsg = (32600 if north else 32700) + zone
        west = -180.0 + 6.0 * (zone - 1)
        piece = geom.intersection(box(west, 0.0 if north else -80.0, west + 6.0, 84.0 if north else 0.0))
        squares = [box(*c.bounds) for c in cells if c.epsg == epsg]
        union = shapely.union_all(squares)
        # cover: what the squares leave of the piece is nothing but projection noise along its edges
        projected = _projected(piece, epsg)
        assert projected.difference(union).area <= 1e-6 * max(projected.area, 1.0)
        # no overlap within a zone: the squares' areas add up to their union's
        assert math.isclose(sum(s.area for s in squares), union.area, rel_tol=1e-9)
