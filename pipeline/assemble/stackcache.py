"""Assembled stacks cached as chunked zarr, keyed by (search, grid, bands).

A run with ``stack_cache=DIR`` looks for ``DIR/stack-<key>.zarr``; when it is there and complete,
the run reads reflectance and the raw quality band from it instead of searching and reading the
archive, and training can read the same store. The key hashes what determines the stack before
any search: catalog, collection, bbox, dates, bands, sensor rules (harmonisation), requested
resolution, item filters and the band sharpener (method and weights sha256). The store keeps the raw
QA band, so clear classes can change without a new download; it is chunked ``(1 frame, all bands,
tile, tile)`` to match the inference tiles.
New items that a catalog publishes later for the same request are not seen until the cache is
refreshed (``refresh_cache=True``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from srcube.pipeline.write.store import CubeStore

log = logging.getLogger(__name__)

KEY_VERSION = 1


def cache_key(params: Mapping[str, Any]) -> str:
    """A short stable hash of the request parameters (JSON with sorted keys)."""
    doc = json.dumps({"v": KEY_VERSION, **params}, sort_keys=True, default=str)
    return hashlib.sha256(doc.encode()).hexdigest()[:24]


class StackCache:
    """A folder (local path or fsspec URL) of cached stacks."""

    def __init__(self, root: str, storage_options: Mapping[str, Any] | None = None) -> None:
        self.root = str(root).rstrip("/")
        self.storage_options = storage_options

    def store(self, key: str) -> CubeStore:
        return CubeStore(f"{self.root}/stack-{key}.zarr", self.storage_options)

    def load(self, key: str) -> xr.Dataset | None:
        """The cached stack (lazy), or None if absent or unfinished."""
        store = self.store(key)
        if store.status() != "complete":
            return None
        ds = store.open()
        ds = ds.drop_vars([v for v in ("srcube_stack",) if v in ds])
        ds["reflectance"] = ds.reflectance.astype(np.float32)
        log.info("read the stack from the cache %s", store.url)
        return ds

    def save(self, key: str, stack: xr.Dataset, params: Mapping[str, Any], client: Any, tile: int) -> xr.Dataset:
        """Write ``stack`` (reflectance + qa + coords), mark it complete, and return it re-opened.

        ``client`` is a dask.distributed Client, or None for the local threaded scheduler.
        """
        from srcube.pipeline import __version__

        store = self.store(key)
        store.check_writable(overwrite=True)
        keep = stack[["reflectance", "qa"]].chunk({"time": 1, "band": -1, "y": tile, "x": tile})
        # strings as numpy object arrays (chunking turned the items coordinate into a dask array)
        keep = keep.assign_coords(band=np.array([str(b) for b in keep.band.values], dtype=object),
                                  items=("time", np.array([str(v) for v in stack["items"].values], dtype=object)))
        keep.attrs = {**stack.attrs, "srcube_version": __version__, "kind": "srcube stack cache",
                      "cache_key": key, "request": json.dumps(dict(params), sort_keys=True, default=str)}
        for name in keep.data_vars:
            keep[name].encoding = {"coordinates": "spatial_ref"}
        ny, nx = keep.sizes["y"], keep.sizes["x"]
        encoding = {"reflectance": {"chunks": (1, keep.sizes["band"], min(tile, ny), min(tile, nx))},
                    "qa": {"chunks": (1, min(tile, ny), min(tile, nx))}}
        writes = store.write_template(keep, encoding)  # template, then every chunk write
        if client is None:
            import dask

            dask.compute(writes)
        else:
            client.gather(client.compute(writes))
        store.finalize()
        log.info("wrote the stack cache %s", store.url)
        cached = self.load(key)
        assert cached is not None
        return cached
