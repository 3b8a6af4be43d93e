"""Persist cubes as zarr v3 with a chunk manifest: template, chunk writes, verify, consolidate, complete.

Transaction model (plain zarr + a chunk manifest):

1. the template (metadata, coordinates, in-memory variables) is written with ``complete = false``
   and the run's ``request_hash``;
2. each write task writes one Dask chunk (whole zarr v3 shards: one writer per shard) and then adds
   its entry to the manifest, ``.srcube/done/<variable>/<i.j.k...>``; an entry exists only after
   its data is fully written, so a crash mid-write leaves no entry and the chunk is redone;
3. :meth:`CubeStore.finalize` checks that every expected entry is there, writes the overviews, removes
   the manifest, consolidates the metadata, and only then sets ``complete = true``.

Resuming an unfinished cube with the same ``request_hash`` skips the chunks listed in the
manifest (their upstream work is culled from the graph); any other unfinished cube is replaced.
srcube never writes into a path that holds something else than an srcube cube.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import dask
import dask.array as da
import fsspec
import numpy as np
import xarray as xr
import zarr
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from zarr.core.array_spec import ArrayConfigParams

from srcube.pipeline.errors import IncompleteCubeError, NotACubeError, OutputExistsError, OutputNotWritableError
from srcube.pipeline.write.lock import StoreLock

log = logging.getLogger(__name__)

MARKER = "srcube_version"
MANIFEST = ".srcube/done"
#: zarr array configuration of every write into a cube: chunks that hold only the fill value are written too
#: (zarr leaves them out by default), so every chunk of every array exists and a missing one is damage that
#: :mod:`pipeline.write.verify` and the read commands can tell (an all-NaN or all-cloudy tile is no exception)
EVERY_CHUNK: ArrayConfigParams = {"write_empty_chunks": True}
#: what is at a cube's path; ``appending``: a complete cube being grown by ``mode="append"``, or whose append was cut
#: short (its ``appending`` attribute names the staging cube; see :mod:`pipeline.append`)
Status = Literal["absent", "empty", "foreign", "incomplete", "appending", "complete"]


def _root_attrs(fs: fsspec.AbstractFileSystem, path: str) -> dict[str, Any] | None:
    meta = f"{path.rstrip('/')}/zarr.json"
    fs.invalidate_cache(path)  # listings are cached per filesystem instance; others may have written
    if not fs.exists(meta):
        return None
    try:
        with fs.open(meta, "rb") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    attrs = doc.get("attributes")
    return attrs if isinstance(attrs, dict) else {}


@contextlib.contextmanager
def quiet_consolidated() -> Iterator[None]:
    """Where zarr warns about what srcube does on purpose: consolidated metadata (a zarr-python extension to v3 that
    srcube relies on knowingly) and an unfinished cube's chunk manifest (``.srcube/``, not a zarr node). The two
    warnings are silenced once for the process (:data:`QUIET`), not per call: ``warnings.catch_warnings`` is not
    thread-safe, and cells of an area run on threads (two of them entering and leaving it at once let the warning
    through, or left filters behind)."""
    yield


#: the warnings :func:`quiet_consolidated` is about, silenced for the process (pyproject.toml ignores them in tests)
QUIET = (("Consolidated metadata is currently not part", UserWarning),
         (r"Object at \.srcube is not recognized", UserWarning))
for _message, _category in QUIET:
    warnings.filterwarnings("ignore", message=_message, category=_category)


def _zarr_store(url: str, storage_options: Mapping[str, Any] | None) -> Any:
    fs, path = url_to_fs(url, **dict(storage_options or {}))
    if isinstance(fs, LocalFileSystem):
        return path
    return zarr.storage.FsspecStore.from_url(url, storage_options=dict(storage_options or {}))


def _write_block(block: np.ndarray, url: str, storage_options: Mapping[str, Any] | None, name: str,
                 block_info: dict[Any, Any] | None = None) -> np.ndarray:
    """Write one Dask chunk into its region of the zarr array, then record it in the manifest."""
    assert block_info is not None
    info = block_info[0]
    region = tuple(slice(a, b) for a, b in info["array-location"])
    # (open_array takes a config only for arrays it creates: with_config sets it on this one)
    array = zarr.open_array(_zarr_store(url, storage_options), path=name, mode="r+").with_config(EVERY_CHUNK)
    array[region] = block
    fs, path = url_to_fs(url, **dict(storage_options or {}))
    folder = f"{path}/{MANIFEST}/{name}"
    fs.makedirs(folder, exist_ok=True)
    fs.pipe_file(f"{folder}/{'.'.join(map(str, info['chunk-location']))}", b"")
    return np.ones((1,) * block.ndim, dtype=bool)


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

    def zarr_store(self) -> Any:
        """The store as zarr-python takes it: a local path, or an FsspecStore with the storage options."""
        return _zarr_store(self.url, self._so)

    def group(self, *, consolidated: bool | None = None) -> zarr.Group:
        """The cube's zarr group, writable; ``consolidated=False`` reads each array's own metadata (current
        shapes while arrays grow) instead of the consolidated copy."""
        return zarr.open_group(self.zarr_store(), mode="r+", use_consolidated=consolidated)

    def consolidate(self) -> None:
        """Rewrite the consolidated metadata from the arrays' own."""
        with quiet_consolidated():
            zarr.consolidate_metadata(self.zarr_store())

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
        if attrs.get("appending"):
            return "appending"
        return "complete" if attrs.get("complete") is True else "incomplete"

    def attrs(self) -> dict[str, Any]:
        return _root_attrs(self.fs, self.path) or {}

    def check_writable(self, *, overwrite: bool = False) -> Status:
        """Raise unless a new cube may be written here; return what is there now.

        Absent, empty or an unfinished srcube cube: fine (an unfinished cube is resumed when it was
        made by the same request, replaced otherwise). A complete srcube cube, or one an append is
        growing (or was cut short growing): only with ``overwrite``. Anything else: never.
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
        if st == "appending" and not overwrite:
            raise IncompleteCubeError(
                f"the cube at {self.url} is being appended to, or an append to it was cut short (from "
                f"{self.attrs().get('appending')}); run that append again (mode='append', CLI: --mode append) "
                "to finish it, or pass overwrite=True (CLI: --overwrite) to replace the cube")
        why = self._local_unwritable()
        if why:
            raise OutputNotWritableError(f"output {self.url} cannot be written: {why}; choose another output path")
        return st

    def _local_unwritable(self) -> str | None:
        """Why a local output (and its lock beside it) cannot be written, or None (object stores: not checked)."""
        if not isinstance(self.fs, LocalFileSystem):
            return None
        path = os.path.abspath(self.path)
        parent = os.path.dirname(path)
        while not os.path.lexists(parent) and os.path.dirname(parent) != parent:
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent):
            return f"{parent} is a file, not a folder"
        for folder in (parent, path) if os.path.isdir(path) else (parent,):
            if not os.access(folder, os.W_OK | os.X_OK):
                return f"no permission to write in {folder}"
        return None

    def lock(self, *, note: str = "") -> StoreLock:
        """The writer lock of this cube: ``<out>.lock`` beside the store (see :mod:`pipeline.write.lock`)."""
        return StoreLock(self.fs, self.path.rstrip("/") + ".lock", note=note)

    def resumable(self, request_hash: str) -> bool:
        """Whether an unfinished cube here was started by the same request (so its chunks count)."""
        return self.status() == "incomplete" and self.attrs().get("request_hash") == request_hash

    # --- the manifest ----------------------------------------------------------------------------

    def done(self, name: str) -> set[tuple[int, ...]]:
        """Chunk locations of ``name`` recorded as written."""
        folder = f"{self.path}/{MANIFEST}/{name}"
        # object stores: other processes (the Dask workers) wrote entries since the last listing,
        # which fsspec caches per filesystem instance
        self.fs.invalidate_cache(folder)
        if not self.fs.exists(folder):
            return set()
        return {tuple(int(i) for i in p.rsplit("/", 1)[-1].split(".")) for p in self.fs.ls(folder, detail=False)}

    def written(self, writes: Iterable[tuple[str, tuple[int, ...]]]) -> set[tuple[str, tuple[int, ...]]]:
        """Which of these (variable, chunk) writes the manifest records: one existence check per entry, so a
        batch of a large cube costs what the batch holds, not a listing of the whole manifest."""
        out = set()
        for name, idx in writes:
            marker = f"{self.path}/{MANIFEST}/{name}/{'.'.join(map(str, idx))}"
            self.fs.invalidate_cache(marker)
            if self.fs.exists(marker):
                out.add((str(name), tuple(idx)))
        return out

    def write_template(self, cube: xr.Dataset, encoding: Mapping[str, Any], *, template_only: bool = False,
                       resume: bool = False) -> list[Any]:
        """Write the template (metadata, coordinates, in-memory variables; ``complete = false``).

        Unless ``template_only``, also return the chunk writes (see :meth:`chunk_writes`); with
        ``resume``, keep the existing template and return only the writes still to do.
        """
        if not resume:
            cube = cube.copy()
            cube.attrs = {**cube.attrs, "complete": False, "chunk_manifest": manifest_sizes(cube),
                          "template_id": uuid.uuid4().hex}  # a new template is a new cube (flow cache keys)
            st = self.status()
            if st in ("incomplete", "appending", "complete"):  # never silently: say what goes
                old = self.attrs()
                why = {"incomplete": "unfinished cube of another request", "appending": "cube whose append was "
                       f"cut short (from {old.get('appending')})", "complete": "complete cube (overwrite)"}[st]
                log.warning("%s: replacing the %s there (dates %s, model %s, request hash %.8s) by this request's "
                            "(dates %s, request hash %.8s)", self.url, why, old.get("dates"), old.get("model"),
                            old.get("request_hash"), cube.attrs.get("dates"), cube.attrs.get("request_hash"))
            if st != "absent":
                self.fs.rm(self.path, recursive=True)
            cube.to_zarr(self.url, mode="w-", compute=False, zarr_format=3, consolidated=False,
                         encoding=dict(encoding), storage_options=self._so, write_empty_chunks=True)
            # consolidated from the start (the arrays' shapes are final): xarray opens the cube with the STAC
            # asset's open options (consolidated) in any state, as one left by a replaced cube's Item may be
            self.consolidate()
        return [] if template_only else self.chunk_writes(cube, encoding)

    def pending(self, cube: xr.Dataset) -> list[tuple[str, tuple[int, ...]]]:
        """(variable, chunk index) of every chunk write not yet recorded in the manifest."""
        out = []
        for name, var in cube.variables.items():
            if isinstance(var.data, da.Array):
                done = self.done(str(name))
                out += [(str(name), idx) for idx in np.ndindex(*var.data.numblocks) if idx not in done]
        return out

    def chunk_writes(self, cube: xr.Dataset, encoding: Mapping[str, Any],
                     only: Iterable[tuple[str, tuple[int, ...]]] | None = None) -> list[Any]:
        """The pending chunk writes (or ``only`` these), lazily: one task per Dask chunk, each
        writing whole zarr chunks and then its manifest entry. Chunks already in the manifest are
        left out, and so is the upstream work only they needed. The writes keep the graph's
        annotations (such as GPU resources on the super-resolution tasks): compute them with
        ``optimize_graph=False`` when those matter.
        """
        wanted: dict[str, list[tuple[int, ...]]] = {}
        for name, idx in (only if only is not None else self.pending(cube)):
            wanted.setdefault(name, []).append(tuple(idx))
        group = zarr.open_group(_zarr_store(self.url, self._so), mode="r+")
        writes: list[Any] = []
        for name, todo in wanted.items():
            var = cube.variables[name]
            v = var.copy(deep=False)
            v.encoding = {**var.encoding, **dict(encoding.get(name, {}))}
            target = group[name]
            assert isinstance(target, zarr.Array)
            data = xr.conventions.encode_cf_variable(v, name=name).data.astype(target.dtype)
            flags = data.map_blocks(_write_block, self.url, self._so, name, dtype=bool,
                                    chunks=tuple((1,) * len(c) for c in data.chunks),
                                    name=f"store-{name}-{dask.base.tokenize(data, self.url, name)}")
            if len(todo) == int(np.prod(data.numblocks)):
                writes.append(flags)
            else:
                writes.extend(flags.blocks[idx] for idx in todo)
        return writes

    @staticmethod
    def count_blocks(writes: Iterable[Any]) -> int:
        return int(sum(int(np.prod(w.numblocks)) for w in writes))

    def expected(self) -> dict[str, int]:
        """Per Dask-written variable, the number of manifest entries a complete cube has."""
        return dict(self.attrs().get("chunk_manifest", {}))

    def sweep_partial_writes(self) -> int:
        """Remove the temporary files of chunk writes that never finished; return how many.

        zarr's local store writes each chunk to ``<chunk>.<uuid>.partial`` and renames it into place,
        so a writer killed mid-write (a lost worker, SIGKILL) leaves that file behind: the chunk is
        rewritten by the rerun, the stray file would stay. Object stores write whole objects, so
        there is nothing to sweep there.
        """
        if not isinstance(self.fs, LocalFileSystem) or not self.fs.exists(self.path):
            return 0
        stray = [p for p in self.fs.find(self.path) if p.endswith(".partial")]
        for p in stray:
            self.fs.rm_file(p)
        return len(stray)

    def finalize(self, extra_attrs: Mapping[str, Any] | None = None, *, overviews: bool = False,
                 describe: Callable[[], Any] | None = None) -> None:
        """Check the manifest, write the overviews (with ``overviews``: :mod:`pipeline.write.overviews`),
        consolidate the metadata, ``describe`` it (the STAC Item: before the cube says complete, so that a run
        killed in between writes it again), then (last) mark the cube complete."""
        for name, n in self.expected().items():
            got = len(self.done(name))
            if got != n:
                raise IncompleteCubeError(f"{self.url}: {got} of {n} chunks of {name} are written; "
                                          "run the same command again to finish it")
        if overviews:  # while the manifest still says every chunk is in: a rerun after a crash here only redoes them
            from srcube.pipeline.write.overviews import write_overviews  # it reads the cube through this store

            write_overviews(self)
        manifest = f"{self.path}/{MANIFEST.split('/')[0]}"
        if self.fs.exists(manifest):  # every chunk is in: the manifest has done its job
            self.fs.rm(manifest, recursive=True)
        swept = self.sweep_partial_writes()
        if swept:
            log.info("%s: removed %d unfinished chunk write(s) of killed writers", self.url, swept)
        self.consolidate()
        if describe is not None:
            describe()
        self.group().attrs.update({**dict(extra_attrs or {}), "complete": True})

    def open(self, *, require_complete: bool = True) -> xr.Dataset:
        st = self.status()
        if st in ("absent", "empty", "foreign"):
            raise FileNotFoundError(f"no srcube cube at {self.url} ({st})")
        if st == "appending" and require_complete:
            raise IncompleteCubeError(f"the cube at {self.url} is being appended to, or an append to it was cut "
                                      f"short (from {self.attrs().get('appending')}); run that append again "
                                      "(mode='append', CLI: --mode append) to finish it")
        if st != "complete" and require_complete:
            raise IncompleteCubeError(f"the cube at {self.url} is not complete (the run that wrote it "
                                      "did not finish); run the same command again to finish it")
        with quiet_consolidated():
            # while an append grows the cube, its consolidated metadata is the cube before (or after) it, whole
            ds = xr.open_zarr(self.url, consolidated=(st in ("complete", "appending")), storage_options=self._so)
        # coordinates are small: load them, so strings (items, band) are not lazy object arrays
        # (here, not on whichever Dask cluster happens to be the default: it may lack this store's credentials)
        ds = ds.assign_coords({name: ds[name].load(scheduler="synchronous") for name in ds.coords
                               if name not in ds.indexes})
        # int16-packed reflectance unpacks to float64 in xarray (zarr keeps its scale_factor as a JSON
        # number, losing the float32 type); srcube's reflectance is float32 either way
        for name, var in ds.data_vars.items():
            if "scale_factor" in var.encoding and var.dtype == np.float64:
                ds[name] = var.astype(np.float32)
        return ds

    def chunk_counts(self, variable: str) -> tuple[int, int] | None:
        """(chunks written, chunks expected) of a variable: how far an interrupted run got.

        From the manifest when the cube has one, else from the zarr chunks present; None when the
        variable's metadata is not there (the run stopped while writing the template).
        """
        try:
            arr = zarr.open_array(_zarr_store(self.url, self._so), path=variable, mode="r")
        except (zarr.errors.ArrayNotFoundError, FileNotFoundError, KeyError):
            return None
        expected = self.expected()
        if variable in expected and self.status() == "incomplete":  # an append has no manifest: its stored chunks
            return len(self.done(variable)), int(expected[variable])
        return int(arr.nchunks_initialized), int(arr.nchunks)


def manifest_sizes(cube: xr.Dataset) -> dict[str, int]:
    """Number of Dask chunks (= manifest entries) per Dask-backed variable of a cube to write."""
    return {str(k): int(np.prod(v.data.numblocks)) for k, v in cube.variables.items() if isinstance(v.data, da.Array)}


def open_cube(url: str, *, storage_options: Mapping[str, Any] | None = None,
              require_complete: bool = True) -> xr.Dataset:
    """Open an srcube cube lazily; by default refuse one that is not marked complete."""
    return CubeStore(url, storage_options).open(require_complete=require_complete)
