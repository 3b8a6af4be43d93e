"""Persist cubes as zarr v3: template first, chunk writes next, then consolidate and mark complete.

A cube's root attributes carry ``complete``: ``false`` from the moment the template is written,
``true`` only after every chunk is in and the metadata is consolidated. A run that crashes or is
interrupted leaves a cube that says it is incomplete. srcube never writes into a path that holds
something else than an srcube cube.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import dask.array as da
import fsspec
import numpy as np
import xarray as xr
import zarr
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from pipeline.errors import IncompleteCubeError, NotACubeError, OutputExistsError

log = logging.getLogger(__name__)

MARKER = "srcube_version"
Status = Literal["absent", "empty", "foreign", "incomplete", "complete"]


def _root_attrs(fs: fsspec.AbstractFileSystem, path: str) -> dict[str, Any] | None:
    meta = f"{path.rstrip('/')}/zarr.json"
    if not fs.exists(meta):
        return None
    try:
        with fs.open(meta, "rb") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    attrs = doc.get("attributes")
    return attrs if isinstance(attrs, dict) else {}


@dataclass
class CubeStore:
    """A zarr v3 cube at a local path or an fsspec URL."""

    url: str
    storage_options: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        self.url = str(self.url)
        self.fs, self.path = url_to_fs(self.url, **dict(self.storage_options or {}))

    @property
    def _so(self) -> dict[str, Any] | None:
        return dict(self.storage_options) if self.storage_options else None

    def status(self) -> Status:
        if not self.fs.exists(self.path):
            return "absent"
        if not self.fs.isdir(self.path):
            return "foreign"
        attrs = _root_attrs(self.fs, self.path)
        if attrs is None:
            return "empty" if not self.fs.ls(self.path) else "foreign"
        if MARKER not in attrs:
            return "foreign"
        return "complete" if attrs.get("complete") is True else "incomplete"

    def attrs(self) -> dict[str, Any]:
        return _root_attrs(self.fs, self.path) or {}

    def check_writable(self, *, overwrite: bool = False) -> Status:
        """Raise unless a new cube may be written here; return what is there now.

        Absent, empty or an unfinished srcube cube: fine (an unfinished cube is replaced).
        A complete srcube cube: only with ``overwrite``. Anything else: never.
        """
        st = self.status()
        if st == "foreign":
            raise NotACubeError(
                f"output {self.url} exists and is not an srcube cube; srcube never overwrites other "
                "data: choose another output path or remove it yourself")
        if st == "complete" and not overwrite:
            raise OutputExistsError(
                f"output {self.url} already holds a complete srcube cube; pass overwrite=True "
                "(CLI: --overwrite) to replace it, or choose another path")
        return st

    def write_template(self, cube: xr.Dataset, encoding: Mapping[str, Any]) -> list[da.Array]:
        """Write metadata, coordinates and in-memory variables; return the chunk writes, lazily.

        The template's root attributes say ``complete = false``. The returned dask arrays (one
        ``store`` task per chunk, each writing whole zarr chunks) keep the graph's annotations, such
        as GPU resources on the super-resolution tasks; compute them with ``optimize_graph=False``
        when annotations matter (xarray's own delayed write optimises the graph and drops them).
        """
        cube = cube.copy()
        cube.attrs = {**cube.attrs, "complete": False}
        if self.status() != "absent":
            self.fs.rm(self.path, recursive=True)
        cube.to_zarr(self.url, mode="w-", compute=False, zarr_format=3, consolidated=False,
                     encoding=dict(encoding), storage_options=self._so)
        writes = []
        group = zarr.open_group(self._zarr_store(), mode="r+")
        for name, var in cube.variables.items():
            if not isinstance(var.data, da.Array):
                continue  # written with the template
            v = var.copy(deep=False)
            v.encoding = {**var.encoding, **dict(encoding.get(str(name), {}))}
            encoded = xr.conventions.encode_cf_variable(v, name=str(name))
            target = group[str(name)]
            writes.append(da.store(encoded.data.astype(target.dtype), target, lock=False, compute=False))
        return writes

    def finalize(self, extra_attrs: Mapping[str, Any] | None = None) -> None:
        """Consolidate the metadata, then (last) mark the cube complete."""
        with warnings.catch_warnings():
            # consolidated metadata is a zarr-python extension to v3; srcube relies on it knowingly
            warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part",
                                    category=UserWarning)
            zarr.consolidate_metadata(self._zarr_store())
        group = zarr.open_group(self._zarr_store(), mode="r+")
        group.attrs.update({**dict(extra_attrs or {}), "complete": True})

    def _zarr_store(self) -> Any:
        if isinstance(self.fs, LocalFileSystem):
            return self.path
        return zarr.storage.FsspecStore.from_url(self.url, storage_options=self._so)

    def open(self, *, require_complete: bool = True) -> xr.Dataset:
        st = self.status()
        if st in ("absent", "empty", "foreign"):
            raise FileNotFoundError(f"no srcube cube at {self.url} ({st})")
        if st != "complete" and require_complete:
            raise IncompleteCubeError(f"the cube at {self.url} is not complete (the run that wrote it "
                                      "did not finish); run the same command again to rewrite it")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part",
                                    category=UserWarning)
            ds = xr.open_zarr(self.url, consolidated=(st == "complete"), storage_options=self._so)
        # coordinates are small: load them, so strings (items, band) are not lazy object arrays
        ds = ds.assign_coords({name: ds[name].load() for name in ds.coords if name not in ds.indexes})
        # int16-packed reflectance unpacks to float64 in xarray (zarr keeps its scale_factor as a JSON
        # number, losing the float32 type); srcube's reflectance is float32 either way
        for name, var in ds.data_vars.items():
            if "scale_factor" in var.encoding and var.dtype == np.float64:
                ds[name] = var.astype(np.float32)
        return ds

    def chunk_counts(self, variable: str) -> tuple[int, int] | None:
        """(chunks written, chunks expected) of a variable: how far an interrupted run got.

        None when the variable's metadata is not there (the run stopped while writing the template).
        """
        try:
            arr = zarr.open_array(self._zarr_store(), path=variable, mode="r")
        except (zarr.errors.ArrayNotFoundError, FileNotFoundError, KeyError):
            return None
        return int(arr.nchunks_initialized), int(arr.nchunks)


def open_cube(url: str, *, storage_options: Mapping[str, Any] | None = None,
              require_complete: bool = True) -> xr.Dataset:
    """Open an srcube cube lazily; by default refuse one that is not marked complete."""
    return CubeStore(url, storage_options).open(require_complete=require_complete)
