"""A complete cube described in STAC: a Collection and an Item beside the store, so that a catalog, a STAC
browser or ``pystac``/``odc.stac`` users can find it and xarray can open it from the Item alone.

The Item carries
* the datacube extension: dimensions ``x``/``y`` (spatial, extent, step, reference system), ``time``
  (temporal, extent, the dates), ``band`` (the band names) and one entry per variable of the cube;
* the projection extension: ``proj:code``, ``proj:shape`` and ``proj:transform`` of the output grid;
* the processing extension: ``processing:software`` (srcube's version), and srcube's own fields
  (``srcube:*``: model, weights sha256, scale, harmonisation, request hash);
* the ``zarr`` asset (media type ``application/vnd+zarr``) with ``xarray:open_kwargs`` (xarray-assets
  extension): ``xr.open_dataset(asset.href, **asset.extra_fields["xarray:open_kwargs"])`` opens it;
  one ``overview-<f>`` asset (role ``overview``) per overview level, whose open options name its group.

Files (fsspec, beside the store ``<name>``): ``<name>.stac/collection.json`` and
``<name>.stac/<item id>.json``; links between them are relative, the zarr asset's href is the store's URL.
:func:`validate` checks both against the STAC core JSON schemas bundled with pystac (offline; the
extensions' own schemas are online documents and are not fetched).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import numpy as np
import pystac
import xarray as xr
from pystac.extensions.datacube import (
    DatacubeExtension,
    Dimension,
    DimensionType,
    HorizontalSpatialDimensionAxis,
    Variable,
    VariableType,
)
from pystac.extensions.projection import ProjectionExtension

from srcube.pipeline.errors import CubeAttributeError
from srcube.pipeline.params import safe_name
from srcube.pipeline.write.overviews import levels as overview_levels
from srcube.pipeline.write.store import CubeStore

PROCESSING = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"
XARRAY_ASSETS = "https://stac-extensions.github.io/xarray-assets/v1.0.0/schema.json"
ZARR_MEDIA_TYPE = "application/vnd+zarr"
#: how xarray opens the asset (consolidated metadata: a complete cube has it)
OPEN_KWARGS = {"engine": "zarr", "consolidated": True, "decode_coords": "all", "chunks": {}}


def stac_folder(store: CubeStore) -> str:
    """Where the cube's Collection and Item live: ``<store path>.stac`` beside the store."""
    return f"{store.path.rstrip('/')}.stac"


def _times(ds: xr.Dataset) -> tuple[dt.datetime, dt.datetime]:
    starts = ds.time.values.astype("datetime64[s]")
    end = ds["time_bounds"].values[:, 1].max() if "time_bounds" in ds else starts.max()
    first = starts.min().astype(dt.datetime).replace(tzinfo=dt.UTC)
    last = np.datetime64(end, "s").astype(dt.datetime).replace(tzinfo=dt.UTC)
    return first, last


def _reference_system(ds: xr.Dataset) -> int | str:
    crs = ds.odc.geobox.crs
    return crs.epsg if crs.epsg is not None else crs.to_wkt()


def _dimensions(ds: xr.Dataset) -> dict[str, Dimension]:
    gbox = ds.odc.geobox
    ref = _reference_system(ds)
    x0, y0, x1, y1 = gbox.extent.boundingbox
    res_x, res_y = gbox.resolution.x, gbox.resolution.y
    dims = {
        "x": Dimension.from_dict({"type": DimensionType.SPATIAL, "axis": HorizontalSpatialDimensionAxis.X,
                                  "extent": [float(x0), float(x1)], "step": float(res_x), "reference_system": ref}),
        "y": Dimension.from_dict({"type": DimensionType.SPATIAL, "axis": HorizontalSpatialDimensionAxis.Y,
                                  "extent": [float(y0), float(y1)], "step": float(res_y), "reference_system": ref}),
    }
    first, last = _times(ds)
    dims["time"] = Dimension.from_dict({
        "type": DimensionType.TEMPORAL, "extent": [first.isoformat(), last.isoformat()],
        "values": [str(np.datetime64(t, "s")) + "Z" for t in ds.time.values]})
    if "band" in ds.dims:
        dims["band"] = Dimension.from_dict({"type": "bands", "values": [str(b) for b in ds.band.values]})
    return dims


def _variables(ds: xr.Dataset) -> dict[str, Variable]:
    out = {}
    for name, var in ds.data_vars.items():
        if name == "time_bounds":
            continue
        doc: dict[str, Any] = {"dimensions": list(map(str, var.dims)),
                               "type": VariableType.DATA if name == "reflectance" else VariableType.AUXILIARY,
                               "description": str(var.attrs.get("long_name", name))}
        if var.attrs.get("units"):
            doc["unit"] = str(var.attrs["units"])
        out[str(name)] = Variable(doc)
    return out


#: a cube's request hash: hex digits (pipeline.write.cube.request_hash), checked before it becomes part of a name
_HASH_RE = re.compile(r"[0-9a-f]{8,64}")


def item_id(url: str, request_hash: object) -> str:
    """The id of the Item (and Collection) of the cube at ``url``: its folder's name made plain, then the first 8
    hex digits of its request hash. The hash is a cube attribute, untrusted (cubes are shared): anything but hex
    digits is a CubeAttributeError, and the id passes the name rules of requests (it becomes a file name and a
    URL path segment)."""
    if not isinstance(request_hash, str) or not _HASH_RE.fullmatch(request_hash):
        raise CubeAttributeError(f"the cube at {url} has request_hash {str(request_hash)[:80]!r}, which is not a hash "
                                 "(hex digits): the cube is corrupt or crafted; nothing is named after it")
    name = url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".zarr")
    name = re.sub(r"[^A-Za-z0-9._+-]+", "-", name).replace("..", "-").strip(".-_+")[:180] or "cube"
    return safe_name(f"{name}-{request_hash[:8]}", "STAC item id", CubeAttributeError)


def cube_item(ds: xr.Dataset, url: str) -> pystac.Item:
    """The STAC Item of the complete cube ``ds`` stored at ``url``."""
    attrs = ds.attrs
    if ds.odc.geobox is None:
        raise ValueError(f"the cube at {url} has no grid (CRS and transform): it cannot be described in STAC")
    west, south, east, north = (float(v) for v in attrs.get("bbox") or ds.odc.geobox.geographic_extent.boundingbox)
    first, last = _times(ds)
    group, factors = overview_levels(dict(attrs), url)
    item = pystac.Item(
        id=item_id(url, attrs.get("request_hash")),
        geometry={"type": "Polygon", "coordinates": [[[west, south], [east, south], [east, north], [west, north],
                                                      [west, south]]]},
        bbox=[west, south, east, north], datetime=None,
        properties={"start_datetime": first.isoformat(), "end_datetime": last.isoformat(),
                    "title": str(attrs.get("title", "srcube cube")),
                    "created": str(attrs.get("created")),
                    "gsd": abs(float(ds.odc.geobox.resolution.x)),
                    "processing:software": {"srcube": str(attrs.get("srcube_version"))},
                    "processing:level": "L2A-SR" if attrs.get("sensor") == "sentinel-2" else "SR",
                    "srcube:model": str(attrs.get("model")), "srcube:weights_sha256": str(attrs.get("weights_sha256")),
                    "srcube:scale": int(attrs.get("scale", 0)), "srcube:mode": str(attrs.get("mode")),
                    "srcube:sensor": str(attrs.get("sensor")), "srcube:source_collection": str(attrs.get("collection")),
                    "srcube:harmonize": str(attrs.get("harmonize", "none")),
                    "srcube:request_hash": str(attrs["request_hash"]),
                    "srcube:source_items": list(attrs.get("stac_item_ids", []))})
    item.stac_extensions.append(PROCESSING)
    item.stac_extensions.append(XARRAY_ASSETS)
    gbox = ds.odc.geobox
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    proj.code = f"EPSG:{gbox.crs.epsg}" if gbox.crs.epsg is not None else None
    if gbox.crs.epsg is None:
        proj.wkt2 = gbox.crs.to_wkt()
    proj.shape = [int(gbox.shape.y), int(gbox.shape.x)]
    proj.transform = [float(v) for v in list(gbox.affine)[:6]]
    cube = DatacubeExtension.ext(item, add_if_missing=True)
    cube.apply(dimensions=_dimensions(ds), variables=_variables(ds))
    item.add_asset("zarr", pystac.Asset(href=url, media_type=ZARR_MEDIA_TYPE, roles=["data"],
                                        title="the cube (zarr v3, consolidated metadata)",
                                        extra_fields={"xarray:open_kwargs": dict(OPEN_KWARGS)}))
    for f in factors:  # each level opens on its own grid
        level = f"{group}/{f}"
        item.add_asset(f"overview-{f}", pystac.Asset(
            href=url, media_type=ZARR_MEDIA_TYPE, roles=["overview"],
            title=f"overview: {f} x {f} block means of every date (zarr group {level})",
            extra_fields={"xarray:open_kwargs": {**OPEN_KWARGS, "group": level}}))
    return item


def cube_collection(ds: xr.Dataset, item: pystac.Item) -> pystac.Collection:
    """A Collection holding the cube's Item (one cube, one collection: a catalog can merge them)."""
    first, last = _times(ds)
    collection = pystac.Collection(
        id=item.id, description=f"srcube cube: {ds.attrs.get('collection')} super-resolved x{ds.attrs.get('scale')} "
                                f"by {ds.attrs.get('model')} over {list(item.bbox or [])} ({ds.attrs.get('dates')})",
        extent=pystac.Extent(pystac.SpatialExtent([list(item.bbox or [])]),
                             pystac.TemporalExtent([[first, last]])),
        license="other", title=str(ds.attrs.get("title", "srcube cube")),
        summaries=pystac.Summaries({"gsd": [item.properties["gsd"]],
                                    "srcube:model": [item.properties["srcube:model"]]}))
    DatacubeExtension.ext(collection, add_if_missing=True).apply(dimensions=_dimensions(ds),
                                                                 variables=_variables(ds))
    return collection


def write_stac(ds: xr.Dataset, store: CubeStore) -> dict[str, str]:
    """Write the Collection and Item of the complete cube ``ds`` at ``store`` beside it; return their paths."""
    item = cube_item(ds, store.url)
    collection = cube_collection(ds, item)
    folder = stac_folder(store)
    item.collection_id = collection.id
    item_doc, coll_doc = item.to_dict(include_self_link=False), collection.to_dict(include_self_link=False)
    item_doc["links"] = [{"rel": "collection", "href": "./collection.json", "type": "application/json"},
                         {"rel": "parent", "href": "./collection.json", "type": "application/json"},
                         {"rel": "root", "href": "./collection.json", "type": "application/json"}]
    coll_doc["links"] = [{"rel": "item", "href": f"./{item.id}.json", "type": "application/geo+json"},
                         {"rel": "root", "href": "./collection.json", "type": "application/json"}]
    paths = {"collection": f"{folder}/collection.json", "item": f"{folder}/{item.id}.json"}
    store.fs.makedirs(folder, exist_ok=True)
    store.fs.pipe_file(paths["item"], json.dumps(item_doc, indent=1).encode())
    store.fs.pipe_file(paths["collection"], json.dumps(coll_doc, indent=1).encode())
    return paths


def finalize(store: CubeStore, extra_attrs: dict[str, Any] | None = None) -> xr.Dataset:
    """Describe the cube in STAC beside it and mark it complete (:meth:`CubeStore.finalize`: every chunk checked,
    the overviews written, the metadata consolidated, the Item and Collection written, complete last: a run killed
    before the end writes them again when run again); return the cube, opened."""
    store.finalize(extra_attrs, overviews=True, describe=lambda: write_stac(store.open(require_complete=False), store))
    return store.open()


def validate(doc: dict[str, Any]) -> None:
    """Validate a STAC Item or Collection document against the core JSON schemas bundled with pystac
    (raises ``pystac.errors.STACValidationError``)."""
    pystac.validation.validate_dict(doc, extensions=[])
