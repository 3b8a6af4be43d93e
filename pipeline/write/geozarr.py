"""The GeoZarr conventions on a cube: ``spatial:``, ``proj:`` and ``multiscales``, each declared in the node's
``zarr_conventions`` list, alongside the CF attributes (``grid_mapping``/``spatial_ref``), which stay.

The conventions are those of the OGC GeoZarr working group (released at the Zarr Summit, October 2025): GDAL 3.13
reads ``multiscales`` as overviews and ``spatial:``/``proj:`` as georeferencing, as titiler-eopf and OpenLayers'
GeoZarr source do. srcube writes them on

- the cube's root group: ``spatial:`` (dimensions ``y, x``, the affine ``spatial:transform`` in rasterio order,
  ``spatial:shape``, ``spatial:bbox``, pixel registration), ``proj:`` (``proj:code`` where the CRS has an EPSG
  code, else ``proj:wkt2``), and ``multiscales``: one ``layout`` entry per level of ``reflectance``, the full
  resolution first, then each overview level (the array ``overviews/<f>/reflectance``) ``derived_from`` the level
  before it, with the ``transform`` between them (``scale``: the block size; ``translation`` 0: a level's blocks
  start at the corner of the one before) and its absolute ``spatial:transform``/``spatial:shape``;
- each overview level's group: its own ``spatial:`` and ``proj:``.

The layout references arrays (the spec's array-based layout), as the full resolution is the root's ``reflectance``,
not a child group. Written with the overviews (:func:`pipeline.write.overviews.write_overviews`), so a cube made,
appended to, resumed or repaired gets them again from its coordinates before its metadata is consolidated.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import xarray as xr
import zarr

#: the ``zarr_conventions`` entries (uuid, schema and spec of each convention, as the conventions publish them)
SPATIAL = {"uuid": "689b58e2-cf7b-45e0-9fff-9cfc0883d6b4",
           "schema_url": "https://raw.githubusercontent.com/zarr-conventions/spatial/refs/tags/v1/schema.json",
           "spec_url": "https://github.com/zarr-conventions/spatial/blob/v1/README.md",
           "name": "spatial:", "description": "Spatial coordinate information"}
PROJ = {"uuid": "f17cb550-5864-4468-aeb7-f3180cfb622f",
        "schema_url": "https://raw.githubusercontent.com/zarr-experimental/geo-proj/refs/tags/v1/schema.json",
        "spec_url": "https://github.com/zarr-experimental/geo-proj/blob/v1/README.md",
        "name": "proj:", "description": "Coordinate reference system information for geospatial data"}
MULTISCALES = {"uuid": "d35379db-88df-4056-af3a-620245f8e347",
               "schema_url": "https://raw.githubusercontent.com/zarr-conventions/multiscales/refs/tags/v1/schema.json",
               "spec_url": "https://github.com/zarr-conventions/multiscales/blob/v1/README.md",
               "name": "multiscales", "description": "Multiscale layout of zarr datasets"}
#: the resampling of the overview levels, in the convention's vocabulary (GDAL's names)
RESAMPLING = "average"
#: the attribute keys srcube owns on a node (replaced whole each time they are written)
KEYS = ("zarr_conventions", "multiscales", "spatial:dimensions", "spatial:transform", "spatial:transform_type",
        "spatial:shape", "spatial:bbox", "spatial:registration", "proj:code", "proj:wkt2")


def transform(ds: xr.Dataset | xr.DataArray) -> list[float]:
    """The affine transform of ``ds``'s ``y``/``x`` pixel-centre coordinates, in rasterio order ``[a, b, c, d, e,
    f]`` (``x = a * col + b * row + c``, ``y = d * col + e * row + f``, at pixel corners)."""
    x, y = ds["x"].values, ds["y"].values
    dx = float(x[1] - x[0]) if x.size > 1 else _step(ds, "x")
    dy = float(y[1] - y[0]) if y.size > 1 else _step(ds, "y")
    return [dx, 0.0, float(x[0]) - dx / 2, 0.0, dy, float(y[0]) - dy / 2]


def _step(ds: xr.Dataset | xr.DataArray, dim: str) -> float:
    """The pixel size along ``dim`` of a grid one pixel long: from the GeoTransform CF gives ``spatial_ref``."""
    gt = [float(v) for v in str(ds["spatial_ref"].attrs["GeoTransform"]).split()]
    return gt[1] if dim == "x" else gt[5]


def crs_attrs(ds: xr.Dataset | xr.DataArray) -> dict[str, Any]:
    """``proj:code`` (``EPSG:<n>``) where the CRS has an EPSG code, else ``proj:wkt2``: from ``spatial_ref``."""
    from pyproj import CRS

    ref = ds["spatial_ref"].attrs
    crs = CRS.from_wkt(str(ref.get("crs_wkt") or ref["spatial_ref"]))
    epsg = crs.to_epsg()
    return {"proj:code": f"EPSG:{epsg}"} if epsg is not None else {"proj:wkt2": crs.to_wkt()}


def spatial_attrs(ds: xr.Dataset | xr.DataArray) -> dict[str, Any]:
    """The ``spatial:`` attributes of a node whose arrays are on ``ds``'s grid."""
    a, _, c, _, e, f = t = transform(ds)
    ny, nx = int(ds.sizes["y"]), int(ds.sizes["x"])
    xs, ys = (c, c + a * nx), (f, f + e * ny)
    return {"spatial:dimensions": ["y", "x"], "spatial:transform_type": "affine", "spatial:transform": t,
            "spatial:shape": [ny, nx], "spatial:bbox": [min(xs), min(ys), max(xs), max(ys)],
            "spatial:registration": "pixel"}


def level_attrs(ds: xr.Dataset | xr.DataArray) -> dict[str, Any]:
    """The attributes of an overview level's group: its ``spatial:`` and ``proj:``, declared."""
    return {"zarr_conventions": [SPATIAL, PROJ], **spatial_attrs(ds), **crs_attrs(ds)}


def root_attrs(cube: xr.Dataset, levels: Sequence[tuple[str, int, xr.Dataset]]) -> dict[str, Any]:
    """The attributes of the cube's root group: its ``spatial:`` and ``proj:``, and ``multiscales`` over the
    full resolution and ``levels`` (group path, factor from the full resolution, the level's grid), in order."""
    layout: list[dict[str, Any]] = [{"asset": "reflectance", "transform": {"scale": [1.0, 1.0],
                                                                             "translation": [0.0, 0.0]},
                                     "spatial:transform": transform(cube),
                                     "spatial:shape": [int(cube.sizes["y"]), int(cube.sizes["x"])]}]
    before, previous = "reflectance", 1
    for path, factor, grid in levels:
        step = float(factor // previous)
        layout.append({"asset": f"{path}/reflectance", "derived_from": before,
                       "transform": {"scale": [step, step], "translation": [0.0, 0.0]},
                       "resampling_method": RESAMPLING, "spatial:transform": transform(grid),
                       "spatial:shape": [int(grid.sizes["y"]), int(grid.sizes["x"])]})
        before, previous = f"{path}/reflectance", factor
    return {"zarr_conventions": [MULTISCALES, SPATIAL, PROJ],
            "multiscales": {"layout": layout, "resampling_method": RESAMPLING},
            **spatial_attrs(cube), **crs_attrs(cube)}


def write(store: Any, cube: xr.Dataset, levels: Sequence[tuple[str, int, xr.Dataset]]) -> None:
    """Set the conventions' attributes on the root of the cube in the zarr ``store`` and on each level's group
    (replacing any that were there, so an append or a repair leaves them right). The groups are opened from their
    own metadata, not the consolidated metadata of the cube (which is made after this, and lacks new levels)."""
    for path, _, grid in levels:
        _replace(zarr.open_group(store, path=path, mode="r+", use_consolidated=False), level_attrs(grid))
    _replace(zarr.open_group(store, mode="r+", use_consolidated=False), root_attrs(cube, levels))


def _replace(node: zarr.Group | zarr.Array, attrs: dict[str, Any]) -> None:
    """``attrs`` on ``node``, and none of :data:`KEYS` but theirs (a CRS stated by code does not keep a WKT); a node
    that has them already is not written (a repair rewrites only what was damaged)."""
    current = node.attrs.asdict()
    stale = [k for k in current if k in KEYS and k not in attrs]
    if not stale and all(k in current and _same(current[k], v) for k, v in attrs.items()):
        return
    for k in stale:
        del node.attrs[k]
    node.attrs.update(attrs)


def _same(stored: Any, new: Any) -> bool:
    """The attribute as stored (JSON: lists, floats) equals the one to write."""
    return bool(json.loads(json.dumps(stored)) == json.loads(json.dumps(new)))
