"""Checked bytes: every chunk of a complete cube is there, whole, and the bytes srcube wrote (``srcube verify``).

What a complete cube holds is exact: srcube writes every chunk of every array, those that hold only the fill value
too (:data:`store.EVERY_CHUNK`), so the chunk keys an array must have follow from its metadata (shape and chunk
grid), and each chunk ends with the crc32c of its compressed bytes (:func:`cube.compressors`); a shard (one date's
SR tile) holds inner chunks and an index of their (offset, length) pairs with the index's own crc32c (zarr v3
sharding). :func:`verify` lists the store once and reads every chunk file, checking the layout by hand (index
checksum, every inner chunk present and inside the file, each inner chunk's checksum), so that it names the inner
chunk and the part that is damaged (a chunk whose bytes changed cannot pass its checksum). It reports each damaged
chunk by array, date (along time) and tile (pixel window on y, x).

:func:`check_present` is the cheap part (one listing, no chunk read): ``srcube info``, ``export`` and ``quicklook``
refuse a cube that says complete but lacks chunks, which zarr would read back as fill values (NaN) without a word.
A flipped byte is caught on every read by zarr's crc32c codec; :func:`checked_reads` turns its error into
:class:`CorruptCubeError`.

:func:`repair` runs the cube's recorded request (attribute ``request``, :meth:`RunRequest.recorded`) again up to
its lazy cube, checks that it is the same cube (``request_hash``), and rewrites exactly the damaged chunks through
the run's own chunk writes (one shard per write task, :meth:`CubeStore.chunk_writes`), the damaged in-memory arrays
(coordinates, per-frame values), then the overviews of the dates it touched; the result is the cube an uninterrupted
run writes, byte for byte.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import zarr

from srcube.pipeline.errors import (
    CorruptCubeError,
    IncompleteCubeError,
    NotACubeError,
    RepairError,
    UnverifiableCubeError,
)
from srcube.pipeline.write.store import EVERY_CHUNK, MANIFEST, CubeStore, quiet_consolidated

log = logging.getLogger(__name__)

#: the shard index's "no chunk here" (offset, length) value (zarr v3 sharding)
_NO_CHUNK = 2**64 - 1
#: chunk files read at once (object stores: requests in flight)
_READERS = 8
#: damaged chunks named in one error message (the rest are counted)
_NAMED = 5


@dataclass(frozen=True)
class Damage:
    """One damaged chunk (or a shard: the store object of a sharded array) of a cube."""

    array: str  # the array's path in the cube: "reflectance", "time", "overviews/8/reflectance"
    key: str  # the chunk's object in the store, relative to the cube
    chunk: tuple[int, ...]  # its place in the array's chunk (shard) grid
    problem: str  # "missing", "truncated" or "corrupt"
    part: str  # "chunk" (unsharded), "shard", "index" or "data" (an inner chunk of a shard), "metadata"
    detail: str = ""
    step: int | None = None  # the time step it holds (arrays along time)
    date: str | None = None  # that time step's date and time (None when the time coordinate is damaged too)
    tile: dict[str, list[int]] | None = None  # its pixel window, [start, stop) on y and x (gridded arrays)

    def where(self) -> str:
        """The date and tile, in words."""
        parts = [self.date[:10] if self.date else f"time step {self.step}" if self.step is not None else ""]
        if self.tile:
            parts.append(", ".join(f"{d} {a}-{b}" for d, (a, b) in self.tile.items()))
        return " ".join(p for p in parts if p) or "-"

    def describe(self) -> str:
        what = f"{self.problem} {self.part}" + (f" ({self.detail})" if self.detail else "")
        return f"{self.array} {self.where()}: {what}"


@dataclass
class Report:
    """What :func:`verify` read and found (and, after :func:`repair`, what it rewrote)."""

    cube: str
    arrays: int = 0
    chunks: int = 0  # chunk files (shards) read
    inner_chunks: int = 0  # chunks checked inside them
    bytes: int = 0
    seconds: float = 0.0
    damage: list[Damage] = field(default_factory=list)
    repaired: list[Damage] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.damage

    def to_json(self) -> dict[str, Any]:
        return {"cube": self.cube, "ok": self.ok, "arrays": self.arrays, "chunks": self.chunks,
                "inner_chunks": self.inner_chunks, "bytes": self.bytes, "seconds": round(self.seconds, 3),
                "damage": [asdict(d) for d in self.damage], "repaired": [asdict(d) for d in self.repaired]}


# --- what a complete cube must hold ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """How one array's chunk files are laid out, from its metadata."""

    path: str
    shape: tuple[int, ...]
    grid: tuple[int, ...]  # the chunk (shard) shape of the store objects
    dims: tuple[str, ...]
    keys: dict[tuple[int, ...], str]  # chunk position -> object key, relative to the cube
    checked: bool  # every chunk (inner chunk) and index ends with its crc32c
    inner: tuple[int, ...] | None = None  # inner chunks per shard (sharded arrays)
    index_at_end: bool = True

    @property
    def index_size(self) -> int:
        return 16 * math.prod(self.inner or ()) + 4

    def damage(self, key: str, chunk: tuple[int, ...], problem: str, part: str, detail: str,
               times: Sequence[str] | None) -> Damage:
        """A :class:`Damage` of chunk ``chunk`` (its object ``key``), placed by date (``times``) and tile."""
        at = {d: (c * g, min((c + 1) * g, n)) for d, c, g, n in zip(self.dims, chunk, self.grid, self.shape,
                                                                   strict=True)}
        step = at["time"][0] if "time" in at else None
        date = times[step] if step is not None and times is not None and step < len(times) else None
        tile: dict[str, list[int]] | None = {d: list(at[d]) for d in ("y", "x") if d in at} or None
        return Damage(self.path, key, chunk, problem, part, detail, step, date, tile)


def _ends_with_crc(codecs: Sequence[Any]) -> bool:
    from zarr.codecs import Crc32cCodec

    return bool(codecs) and isinstance(codecs[-1], Crc32cCodec)


def _layout(path: str, arr: zarr.Array) -> _Layout:
    from zarr.codecs import BytesCodec, ShardingCodec

    meta = arr.metadata
    grid = tuple(int(g) for g in (arr.shards or arr.chunks))  # a store object: a shard, else a chunk
    shape = tuple(int(s) for s in arr.shape)
    positions = itertools.product(*(range(math.ceil(n / g)) for n, g in zip(shape, grid, strict=True)))
    keys = {p: f"{path}/{meta.encode_chunk_key(p)}" for p in positions}
    dims = tuple(str(d) for d in (getattr(meta, "dimension_names", None) or ())) or tuple(f"dim_{i}" for i in
                                                                                           range(len(shape)))
    codecs = list(getattr(meta, "codecs", ()))
    if codecs and isinstance(codecs[0], ShardingCodec):
        shard = codecs[0]
        index_ok = [type(c) for c in shard.index_codecs[:1]] == [BytesCodec] and _ends_with_crc(shard.index_codecs) \
            and len(shard.index_codecs) == 2
        inner = tuple(g // c for g, c in zip(grid, shard.chunk_shape, strict=True))
        return _Layout(path, shape, grid, dims, keys, index_ok and _ends_with_crc(shard.codecs), inner,
                       shard.index_location.value == "end")
    return _Layout(path, shape, grid, dims, keys, _ends_with_crc(codecs))


def _arrays(store: CubeStore) -> dict[str, zarr.Array]:
    """Every array of the cube by path, as its consolidated metadata lists it."""
    with quiet_consolidated():
        group = zarr.open_group(store.zarr_store(), mode="r", use_consolidated=True)
        return {str(name): node for name, node in group.members(max_depth=None) if isinstance(node, zarr.Array)}


def _complete(store: CubeStore) -> None:
    status = store.status()
    if status in ("absent", "empty", "foreign"):
        raise NotACubeError(f"{store.url}: no srcube cube here ({status}); give the path or URL of a cube")
    if status == "appending":  # its arrays may be grown and not yet filled: nothing to check, or to repair, yet
        raise IncompleteCubeError(f"the cube at {store.url} is being appended to, or an append to it was cut short "
                                  f"(from {str(store.attrs().get('appending'))[:200]!r}), so its new time steps are "
                                  "not all written; run that append again first (the same request, mode='append', "
                                  "CLI: --mode append) to finish it, then verify (or repair) the grown cube")
    if status != "complete":
        raise IncompleteCubeError(f"the cube at {store.url} is not complete (its run or append did not finish), so "
                                  "chunks are missing by design; run the same command again to finish it, then verify")


def _listing(store: CubeStore) -> dict[str, int]:
    """Every object of the cube and its size, by key relative to the cube (one listing)."""
    root = store.path.rstrip("/")
    store.fs.invalidate_cache(root)
    found = store.fs.find(root, detail=True)
    return {p[len(root) + 1:]: int(info.get("size") or 0) for p, info in found.items() if p.startswith(root + "/")}


def _times(store: CubeStore, layouts: Mapping[str, _Layout], sizes: Mapping[str, int]) -> list[str] | None:
    """The cube's time steps (ISO, to the second), or None when they cannot be read (the time array is damaged:
    a missing chunk would read as the epoch)."""
    from xarray.coding.times import decode_cf_datetime

    if "time" not in layouts or any(sizes.get(k, 0) < 5 for k in layouts["time"].keys.values()):
        return None
    try:
        arr = zarr.open_array(store.zarr_store(), path="time", mode="r")
        calendar = arr.attrs.get("calendar")
        values = decode_cf_datetime(np.asarray(arr[...]), str(arr.attrs["units"]), str(calendar) if calendar else None)
    except (ValueError, KeyError, TypeError, OSError, zarr.errors.ArrayNotFoundError):
        return None
    return [str(np.datetime64(v, "s")) for v in np.asarray(values)]


def _unverifiable(store: CubeStore, layouts: Mapping[str, _Layout]) -> None:
    unchecked = sorted(p for p, lay in layouts.items() if not lay.checked)
    if unchecked:
        raise UnverifiableCubeError(
            f"{store.url}: {len(unchecked)} array(s) carry no crc32c checksums ({', '.join(unchecked[:_NAMED])}"
            f"{', ...' if len(unchecked) > _NAMED else ''}; codec {store.attrs().get('codec')!r}): the cube was "
            "written before srcube checked its bytes, so a damaged chunk cannot be told from a good one; write it "
            "again with the same request and --overwrite to get a checked cube")


def check_present(store: CubeStore) -> None:
    """Raise :class:`CorruptCubeError` when the complete cube at ``store`` lacks chunk files, or holds some shorter
    than their index (zarr reads either back as fill values); one listing, no chunk read. Cubes written without
    checksums are not checked (they may lack chunks by design)."""
    layouts = {p: _layout(p, a) for p, a in _arrays(store).items()}
    if any(not lay.checked for lay in layouts.values()):
        return
    sizes = _listing(store)
    times: list[str] | None = None
    damage: list[Damage] = []
    for lay in layouts.values():
        for pos, key in lay.keys.items():
            size = sizes.get(key)
            least = lay.index_size if lay.inner else 5
            if size is None or size < least:
                times = _times(store, layouts, sizes) if not damage else times
                damage.append(lay.damage(key, pos, "missing" if size is None else "truncated",
                                         "shard" if lay.inner else "chunk", "" if size is None else f"{size} bytes",
                                         times))
    if damage:
        raise CorruptCubeError(_damaged(store.url, damage))


def _damaged(url: str, damage: Sequence[Damage]) -> str:
    named = "; ".join(d.describe() for d in damage[:_NAMED]) + (f"; and {len(damage) - _NAMED} more"
                                                                  if len(damage) > _NAMED else "")
    return (f"the cube at {url} says it is complete but {len(damage)} chunk(s) are damaged ({named}); zarr would "
            f"read them as no data: `srcube verify {url}` lists them, `srcube verify {url} --repair` rewrites them "
            "from the cube's recorded request")


@contextlib.contextmanager
def checked_reads(url: str) -> Iterator[None]:
    """Reads of the cube at ``url`` in the block: a chunk that fails its crc32c raises :class:`CorruptCubeError`
    (zarr's crc32c codec raises a plain ValueError) that says how to find and repair it."""
    try:
        yield
    except ValueError as exc:
        if "checksum" not in str(exc):
            raise
        raise CorruptCubeError(f"a chunk of the cube at {url} fails its crc32c checksum (its bytes changed after "
                               f"srcube wrote them); `srcube verify {url}` lists the damaged chunks by date and tile, "
                               f"`srcube verify {url} --repair` rewrites them") from exc


# --- reading every chunk ------------------------------------------------------------------------------------


def _crc_ok(data: bytes | memoryview) -> bool:
    import google_crc32c

    return len(data) >= 4 and int(google_crc32c.value(bytes(data[:-4]))).to_bytes(4, "little") == bytes(data[-4:])


def _check_shard(lay: _Layout, data: bytes) -> tuple[list[tuple[str, str, str]], int]:
    """(problems as (problem, part, detail), inner chunks checked) of one shard's bytes."""
    assert lay.inner is not None
    size = lay.index_size
    if len(data) < size:
        return [("truncated", "shard", f"{len(data)} bytes, shorter than its {size}-byte index")], 0
    index = data[-size:] if lay.index_at_end else data[:size]
    if not _crc_ok(index):
        return [("corrupt", "index", "the shard index fails its crc32c (a changed or cut shard)")], 0
    pairs = np.frombuffer(index[:-4], dtype="<u8").reshape(*lay.inner, 2)
    lo, hi = (0, len(data) - size) if lay.index_at_end else (size, len(data))
    out: list[tuple[str, str, str]] = []
    checked = 0
    for pos in np.ndindex(*lay.inner):
        offset, length = (int(v) for v in pairs[pos])
        name = f"inner chunk {','.join(map(str, pos))}"
        if offset == _NO_CHUNK:
            out.append(("missing", "data", name))
        elif offset < lo or offset + length > hi:
            out.append(("truncated", "data", f"{name} at bytes {offset}-{offset + length} of {len(data)}"))
        elif not _crc_ok(memoryview(data)[offset:offset + length]):
            out.append(("corrupt", "data", f"{name} fails its crc32c"))
        else:
            checked += 1
    return out, checked


def _check_file(lay: _Layout, data: bytes) -> tuple[list[tuple[str, str, str]], int]:
    if lay.inner is not None:
        return _check_shard(lay, data)
    if len(data) < 5:
        return [("truncated", "chunk", f"{len(data)} bytes")], 0
    return ([], 1) if _crc_ok(data) else ([("corrupt", "chunk", "fails its crc32c")], 0)


def _metadata_damage(store: CubeStore, arrays: Mapping[str, zarr.Array]) -> list[Damage]:
    """Arrays whose own metadata (``zarr.json``) is gone or differs from the consolidated copy."""
    out = []
    for path, arr in arrays.items():
        try:
            own = zarr.open_array(store.zarr_store(), path=path, mode="r", use_consolidated=False).metadata.to_dict()
            same = own == arr.metadata.to_dict()
            why = "" if same else "differs from the consolidated metadata"
        except (ValueError, KeyError, OSError, TypeError, zarr.errors.ArrayNotFoundError) as exc:
            same, why = False, f"cannot be read: {type(exc).__name__}"
        if not same:
            out.append(Damage(path, f"{path}/zarr.json", (), "corrupt", "metadata", why))
    return out


def verify(store: CubeStore | str, storage_options: Mapping[str, Any] | None = None) -> Report:
    """Read every chunk of the complete cube at ``store`` and report the missing, truncated and corrupt ones
    (see the module docstring); raise :class:`UnverifiableCubeError` for a cube written without checksums."""
    store = store if isinstance(store, CubeStore) else CubeStore(store, storage_options)
    t0 = time.perf_counter()
    _complete(store)
    arrays = _arrays(store)
    layouts = {p: _layout(p, a) for p, a in arrays.items()}
    _unverifiable(store, layouts)
    report = Report(store.url, arrays=len(layouts))
    report.damage += _metadata_damage(store, arrays)
    sizes = _listing(store)
    times = _times(store, layouts, sizes)
    root = store.path.rstrip("/")
    todo: list[tuple[_Layout, tuple[int, ...], str]] = []
    for lay in layouts.values():
        for pos, key in lay.keys.items():
            if key not in sizes:
                report.damage.append(lay.damage(key, pos, "missing", "shard" if lay.inner else "chunk", "", times))
            else:
                todo.append((lay, pos, key))

    def read(item: tuple[_Layout, tuple[int, ...], str]) -> tuple[int, list[tuple[str, str, str]], int]:
        lay, _, key = item
        data = store.fs.cat_file(f"{root}/{key}")
        problems, inner = _check_file(lay, data)
        return len(data), problems, inner

    with ThreadPoolExecutor(_READERS) as pool:
        for (lay, pos, key), (n, problems, inner) in zip(todo, pool.map(read, todo), strict=True):
            report.chunks += 1
            report.bytes += n
            report.inner_chunks += inner
            report.damage += [lay.damage(key, pos, problem, part, detail, times) for problem, part, detail in problems]
    report.seconds = time.perf_counter() - t0
    log.info("%s: %d chunk files (%d chunks, %.1f MB) of %d arrays read in %.1f s: %s", store.url, report.chunks,
             report.inner_chunks, report.bytes / 2**20, report.arrays, report.seconds,
             "all sound" if report.ok else f"{len(report.damage)} damaged")
    return report


# --- repair ---------------------------------------------------------------------------------------------------


def _recorded_request(store: CubeStore, attrs: Mapping[str, Any]) -> dict[str, Any]:
    text = attrs.get("request")
    try:
        doc = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise RepairError(f"{store.url} records no request that srcube can run again (attribute request: "
                          f"{str(text)[:80]!r}; cubes written before srcube recorded it, or with a model object in "
                          "memory, have none): write the cube again with its request and --overwrite")
    return doc


def _plan_repair(store: CubeStore, damage: Sequence[Damage], attrs: Mapping[str, Any]) -> None:
    """Refuse what a repair cannot do, before any work."""
    meta = [d for d in damage if d.part == "metadata"]
    if meta:
        raise RepairError(f"{store.url}: the metadata of {', '.join(d.array for d in meta)} is damaged; a repair "
                          "rewrites chunks, not the cube's structure: write the cube again with its request and "
                          "--overwrite")
    if attrs.get("appended"):
        raise RepairError(f"{store.url} was grown by {len(attrs['appended'])} append(s): its chunks come from "
                          "several requests and a repair runs one; run the requests again into a new cube")


def _block_of(chunks: Sequence[Sequence[int]], start: Sequence[int]) -> tuple[int, ...]:
    """The Dask block (index) holding the element at ``start``."""
    return tuple(int(np.searchsorted(np.cumsum(c), s, side="right")) for c, s in zip(chunks, start, strict=True))


def _grid(store: CubeStore, path: str) -> tuple[int, ...]:
    """The chunk (shard) shape of the store objects of array ``path``."""
    arr = zarr.open_array(store.zarr_store(), path=path, mode="r")
    return tuple(int(g) for g in (arr.shards or arr.chunks))


def repair(store: CubeStore | str, storage_options: Mapping[str, Any] | None = None, *,
           client: Any | None = None) -> Report:
    """Rewrite the damaged chunks of the cube at ``store`` from its recorded request (see the module docstring);
    return the report of a verify after it, whose ``repaired`` lists what was rewritten. :class:`RepairError`
    when that cannot be done (nothing recorded, damaged metadata, a grown cube, a request that now makes another
    cube) or leaves damage."""
    import dask.array as da

    from srcube.pipeline.cluster import dask_client
    from srcube.pipeline.region import RegionJob
    from srcube.pipeline.request import RunRequest
    from srcube.pipeline.write.overviews import GROUP

    store = store if isinstance(store, CubeStore) else CubeStore(store, storage_options)
    t0 = time.perf_counter()
    before = verify(store)
    if before.ok:
        return before
    attrs = store.attrs()
    _plan_repair(store, before.damage, attrs)
    try:  # the attributes of a shared cube are untrusted input: checked as any request
        req = RunRequest.from_recorded(_recorded_request(store, attrs), out=store.url,
                                       storage_options=store.storage_options)
    except (ValueError, TypeError) as exc:
        raise RepairError(f"{store.url}: its recorded request is not a valid request ({exc}); write the cube "
                          "again with its request and --overwrite") from exc
    log.info("%s: running its recorded request again over %d damaged chunk(s): %s", store.url, len(before.damage),
             json.dumps({k: v for k, v in req.to_json().items() if k != "out"}))
    # the plan checks that the output may be written: a repair writes into this complete cube (its damaged chunks)
    job = RegionJob.from_request(req.model_copy(update={"options": req.options.model_copy(update={"overwrite": True})}))
    lock = store.lock(note="srcube verify --repair")
    lock.acquire(wait=job.opts.lock_wait)
    try:
        with dask_client(client, n_workers=job.opts.n_workers, processes=job.opts.processes) as dc:
            job.load(dc)
            job.decide(dc)
            cube = job.build(dc)
            if cube.attrs["request_hash"] != attrs.get("request_hash"):
                raise RepairError(
                    f"{store.url}: its recorded request now makes another cube (request hash "
                    f"{cube.attrs['request_hash']}, the cube's {attrs.get('request_hash')}: the catalog's items, "
                    "the model or srcube changed since), so the damaged chunks cannot be written again as they were; "
                    "write the cube again with --overwrite")
            # zarr reads a shard before writing into it (and fails on a damaged one): the damaged objects go first
            # (cut short here, the cube lacks them, which verify and the read commands tell)
            _remove(store, before.damage)
            writes: set[tuple[str, tuple[int, ...]]] = set()
            in_memory: set[str] = set()
            for d in before.damage:
                if d.array.startswith(f"{GROUP}/") or d.array not in cube.variables:
                    continue  # overviews: made from the cube below
                var = cube.variables[d.array]
                if isinstance(var.data, da.Array):  # the write task of the Dask block holding the shard
                    first = [c * g for c, g in zip(d.chunk, _grid(store, d.array), strict=True)]
                    writes.add((d.array, _block_of(var.data.chunks, first)))
                else:
                    in_memory.add(d.array)
            if writes:
                log.info("%s: %d chunk write(s) done again", store.url, job.write(dc, only=sorted(writes)))
        _rewrite_in_memory(store, cube, job.encoding, in_memory)
        manifest = f"{store.path.rstrip('/')}/{MANIFEST.split('/')[0]}"
        if store.fs.exists(manifest):  # the chunk writes' entries: a complete cube has no manifest
            store.fs.rm(manifest, recursive=True)
        store.sweep_partial_writes()
        _rewrite_overviews(store, before.damage, attrs)
        store.consolidate()
    finally:
        lock.release()
    after = verify(store)
    if not after.ok:
        raise RepairError(f"{store.url}: after the repair {len(after.damage)} chunk(s) are still damaged ("
                          + "; ".join(d.describe() for d in after.damage[:_NAMED]) + "); is something else writing "
                          "the cube, or its storage failing?")
    after.repaired = list(before.damage)
    after.seconds = time.perf_counter() - t0
    return after


def _remove(store: CubeStore, damage: Sequence[Damage]) -> None:
    root = store.path.rstrip("/")
    for key in sorted({d.key for d in damage}):
        path = f"{root}/{key}"
        store.fs.invalidate_cache(path)
        if store.fs.exists(path):
            store.fs.rm_file(path)


def _rewrite_in_memory(store: CubeStore, cube: Any, encoding: Mapping[str, Any], names: set[str]) -> None:
    """Rewrite whole the arrays the template wrote (coordinates, per-frame values), encoded as the template was."""
    import xarray as xr

    if not names:
        return
    variables = {}
    for name in names:
        var = cube.variables[name].copy(deep=False)
        var.encoding = {**cube.variables[name].encoding, **dict(encoding.get(name, {}))}
        variables[name] = var
    encoded, _ = xr.conventions.cf_encoder(variables, {})
    for name in sorted(names):
        target = zarr.open_array(store.zarr_store(), path=name, mode="r+").with_config(EVERY_CHUNK)
        values = np.asarray(encoded[name].values)
        target[...] = values if values.dtype == object else values.astype(target.dtype)
    log.info("%s: rewrote %s", store.url, ", ".join(sorted(names)))


def _rewrite_overviews(store: CubeStore, damage: Sequence[Damage], attrs: Mapping[str, Any]) -> None:
    """Rewrite the overview levels of the time steps whose reflectance was rewritten or whose level is damaged
    (every level whole when a level's array that is not its reflectance is damaged)."""
    from srcube.pipeline.write.overviews import GROUP, write_overviews

    if not attrs.get("overviews"):
        return
    steps: set[int] = set()
    for d in damage:
        if d.array == "reflectance" or (d.array.startswith(f"{GROUP}/") and d.array.endswith("/reflectance")):
            g = _grid(store, d.array)[0]
            steps.update(range(d.chunk[0] * g, (d.chunk[0] + 1) * g))
        elif d.array.startswith(f"{GROUP}/"):
            write_overviews(store)
            return
    n = int(zarr.open_array(store.zarr_store(), path="reflectance", mode="r").shape[0])
    runs: list[list[int]] = []
    for t in sorted(s for s in steps if s < n):
        if runs and runs[-1][-1] == t - 1:
            runs[-1].append(t)
        else:
            runs.append([t])
    for run in runs:
        write_overviews(store, run[0], run[-1] + 1)
