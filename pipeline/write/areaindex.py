"""The index of an area's cubes: one STAC Collection at ``PREFIX/collection.json`` and one Item per cell at
``PREFIX/items/<cell id>.json``, a self-contained static catalog (relative links, and asset hrefs relative to the
items: the folder can move or be copied as one).

Each cell's Item is the cube's own (:func:`~srcube.pipeline.write.stac.cube_item`: datacube, projection, processing,
the zarr asset and its overview levels with their xarray open options) under the cell's id, with the cell's square as
its geometry and ``srcube:cell``. The worker that made a cell writes its Item; the area run then writes the
Collection from the Items present (cells of earlier runs included): its spatial extent is the union of the cells',
its temporal extent the union of the dates asked, and ``srcube:cell_size_m`` tells
:func:`~srcube.pipeline.mosaic.open_area` which cells a bbox touches without reading every Item.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from typing import Any

import pystac
from fsspec.core import url_to_fs

from srcube.pipeline.cells import Cell
from srcube.pipeline.errors import CubeAttributeError
from srcube.pipeline.params import DateRange, safe_name
from srcube.pipeline.request import RunRequest
from srcube.pipeline.write.stac import cube_item, validate
from srcube.pipeline.write.store import CubeStore

COLLECTION = "collection.json"
ITEMS = "items"
#: what an area's cubes have in common (the request's identity without region, dates and output)
_IDENTITY = ("catalog", "collection", "bands", "model", "scale")


def _fs(prefix: str, storage_options: Mapping[str, Any] | None) -> tuple[Any, str]:
    fs, path = url_to_fs(prefix, **dict(storage_options or {}))
    return fs, str(path).rstrip("/")


def write_cell_item(prefix: str, cell: Cell, store: CubeStore, storage_options: Mapping[str, Any] | None) -> str:
    """Write the Item of ``cell``'s complete cube at ``store`` into the area's index under ``prefix``; its path."""
    cube = store.open()
    item = cube_item(cube, store.url)
    doc = item.to_dict(include_self_link=False)
    doc["id"] = cell.id
    doc["geometry"] = json.loads(json.dumps(cell.footprint().__geo_interface__))
    doc["bbox"] = list(cell.bbox().as_tuple())
    doc["properties"].update({"srcube:cell": cell.id, "srcube:cell_size_m": cell.size_m})
    for asset in doc["assets"].values():  # relative to the item: the catalog moves with its cubes
        asset["href"] = f"../{cell.id}.zarr"
    doc["links"] = [{"rel": rel, "href": f"../{COLLECTION}", "type": "application/json"}
                    for rel in ("collection", "parent", "root")]
    doc["collection"] = collection_id(prefix)
    fs, path = _fs(prefix, storage_options)
    fs.makedirs(f"{path}/{ITEMS}", exist_ok=True)
    target = f"{path}/{ITEMS}/{cell.id}.json"
    fs.pipe_file(target, json.dumps(doc, indent=1).encode())
    return target


def collection_id(prefix: str) -> str:
    """The area collection's id: the folder's name made plain (a URL path segment and a file name)."""
    name = str(prefix).rstrip("/").rsplit("/", 1)[-1]
    name = re.sub(r"[^A-Za-z0-9._+-]+", "-", name).replace("..", "-").strip(".-_+")[:180] or "srcube-area"
    return safe_name(name, "area collection id", CubeAttributeError)


def cell_ids(prefix: str, storage_options: Mapping[str, Any] | None) -> list[str]:
    """The cells whose Items the index holds, sorted."""
    fs, path = _fs(prefix, storage_options)
    folder = f"{path}/{ITEMS}"
    fs.invalidate_cache(folder)
    if not fs.exists(folder):
        return []
    out = []
    for p in fs.ls(folder, detail=False):
        name = str(p).rsplit("/", 1)[-1]
        if name.endswith(".json"):
            try:
                out.append(Cell.parse(name.removesuffix(".json")).id)
            except ValueError:
                continue  # not a cell's item: left alone
    return sorted(out)


def read_collection(prefix: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    fs, path = _fs(prefix, storage_options)
    target = f"{path}/{COLLECTION}"
    if not fs.exists(target):
        return None
    doc = json.loads(fs.cat_file(target))
    return doc if isinstance(doc, dict) else None


def write_collection(template: RunRequest, size_m: int, storage_options: Mapping[str, Any] | None) -> str:
    """Write the area's Collection at ``<prefix>/collection.json`` from the Items in ``<prefix>/items`` (one listing,
    no Item read: a cell's extent is its id's); return its path. Earlier runs' cells and dates stay in it."""
    prefix = template.out
    fs, path = _fs(prefix, storage_options)
    ids = cell_ids(prefix, storage_options)
    previous = read_collection(prefix, storage_options) or {}
    cid = collection_id(prefix)
    days = DateRange.parse(template.dates)
    start = dt.datetime.combine(days.start, dt.time(), dt.UTC)
    end = dt.datetime.combine(days.end, dt.time(23, 59, 59), dt.UTC)
    for interval in (previous.get("extent", {}).get("temporal", {}).get("interval") or [])[:1]:
        if interval and interval[0]:
            start = min(start, dt.datetime.fromisoformat(interval[0].replace("Z", "+00:00")))
        if len(interval) > 1 and interval[1]:
            end = max(end, dt.datetime.fromisoformat(interval[1].replace("Z", "+00:00")))
    boxes = [Cell.parse(i).bbox().as_tuple() for i in ids]
    union = ([min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]
             if boxes else [-180.0, -90.0, 180.0, 90.0])
    identity = {k: v for k, v in template.to_json().items() if k in _IDENTITY}
    collection = pystac.Collection(
        id=cid, title=f"srcube area {cid}",
        description=f"srcube cubes of an area, one per cell of {size_m} m ({len(ids)} cells): "
                    f"{identity.get('collection') or 'the catalog default'} from {identity.get('catalog')}, "
                    f"super-resolved x{identity.get('scale') or 'default'} by {identity.get('model')}",
        extent=pystac.Extent(pystac.SpatialExtent([union]), pystac.TemporalExtent([[start, end]])),
        license="other", extra_fields={"srcube:cell_size_m": size_m, "srcube:request": identity})
    doc = collection.to_dict(include_self_link=False)
    doc["links"] = [{"rel": "root", "href": f"./{COLLECTION}", "type": "application/json"}] + [
        {"rel": "item", "href": f"./{ITEMS}/{i}.json", "type": "application/geo+json"} for i in ids]
    validate(doc)
    fs.makedirs(path, exist_ok=True)
    fs.pipe_file(f"{path}/{COLLECTION}", json.dumps(doc, indent=1).encode())
    return f"{prefix.rstrip('/')}/{COLLECTION}"
