"""The map tiles of a cube: what ``srcube view``'s page draws, each read from only the window it shows.

The map's grid is the cube's own pixel grid in its CRS (no reprojection, no basemap): a tile is ``TILE x TILE`` pixels
of one level, level ``1`` the full-resolution arrays and level ``f`` the overview group ``overviews/<f>`` (block means
of ``f x f`` pixels, :mod:`pipeline.write.overviews`). The page asks for the level that fits its zoom, and the tiles
in view only; a tile reads the window it covers, nothing more (the zarr chunks it intersects: :class:`Counters`
counts them, by array).

Layers of a tile:

* ``true`` / ``false``: band composites (true colour; false colour with the near infrared as red), stretched as
  ``srcube quicklook`` stretches the date (:func:`pipeline.write.quicklook.stretch_limits` of the same decimated
  frame: the 2nd to 98th percentile of the three bands), so the page and the quicklook give the same pixels;
* ``true-input`` / ``false-input``: the bicubic view of the input, *derived* from the super-resolved tile (nothing
  is stored for it): the tile with a margin is degraded by the operator of the consistency projection
  (:meth:`models.consistency.Projection.degrade`: the sensor's PSF, then point sampling at the input pixel
  centres, with the cube's ``consistency_psf_sigma`` and ``scale``), which gives the input back, then upsampled
  by the ``bicubic`` baseline (:class:`models.interp.Interpolation`) and cropped. On a cube made with the
  consistency projection (``consistency_projection`` true) the degraded tile *is* the input up to the projection's
  residual (the ``consistency`` layer shows it; within the operator's reach of the cube's outer edge the cube's
  halo is missing, so the edge pixels are approximate); on other cubes it is an estimate of the input (what the
  sensor would have seen of the super-resolved image). The margin covers the operator's and bicubic's reach, so a
  tile equals the same derivation over the whole frame. Zoomed out (overview levels), the input view is the
  overview itself: there a screen pixel covers an input pixel or more, and the two views are the same data;
* ``clear``: pixels that are not clear (the cube's ``clear`` layer is 0), in orange; clear pixels transparent;
* ``consistency``: the consistency error per input pixel on a logarithmic ramp from :data:`CONSISTENCY_RAMP`
  ``[0]`` (dark blue) to ``[1]`` reflectance (yellow) and above; only on cubes that have the layer.

The overlays have no overview levels in the cube: zoomed out, a tile reads every ``f``-th pixel of its window
(zarr decompresses each chunk in the window once).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import re
import struct
import threading
import zlib
from collections.abc import AsyncGenerator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import xarray as xr
from fsspec.implementations.local import LocalFileSystem
from zarr.abc.store import ByteRequest, SuffixByteRequest
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import FsspecStore, LocalStore, WrapperStore

from srcube.pipeline.errors import CubeAttributeError, IncompleteCubeError, NotACubeError
from srcube.pipeline.redact import redact
from srcube.pipeline.write.overviews import levels as overview_levels
from srcube.pipeline.write.quicklook import COMPOSITES, composite_bands, decimated, stretch_limits, true_colour
from srcube.pipeline.write.store import CubeStore, quiet_consolidated
from srcube.pipeline.write.verify import check_present, checked_reads

#: pixels per side of a tile (of its level)
TILE = 256
#: the quicklook whose stretch the composites use: ``srcube quicklook``'s default size (its level and decimation)
QUICKLOOK_SIDE = 512
#: the consistency layer's colour ramp: log10 from the first to the second value (reflectance)
CONSISTENCY_RAMP = (1e-5, 1e-2)
#: what the ``clear`` overlay paints where a pixel is not clear (RGB)
NOT_CLEAR_RGB = (255, 120, 0)
#: input pixels that bicubic interpolation reads each side (beyond the one it is at)
BICUBIC_REACH = 2
#: layers of a tile, and what each shows (the page lists those the cube has)
LAYER_NAMES = {"true": "true colour", "false": "false colour (near infrared as red)",
               "true-input": "true colour, bicubic view of the input", "false-input":
               "false colour, bicubic view of the input", "clear": "not clear (QA)", "consistency": "consistency error"}
_TILE_PATH = re.compile(r"^/tiles/([0-9]{1,7})/([0-9]{1,7})/([0-9]{1,7})\.png$")


class TileRequestError(ValueError):
    """A request the map cannot answer: ``status`` 400 (malformed) or 404 (no such level, tile, date or layer)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# --- counting what is read ---------------------------------------------------------------------------------------


@dataclass
class Counters:
    """What the map served and what it read since the last :meth:`reset` (thread-safe): tiles served (answered
    from the tile cache or rendered), by level and layer, each tile request in order (``tile_log``), and the store
    reads: zarr chunks read from the store (inside a shard: each inner chunk is one ranged read), shard index reads,
    metadata reads and their bytes, and reads the :class:`ReadCache` answered (``cache_hits``); the chunks used (from
    the store or the cache) by array path (``overviews/4/reflectance`` is level 4) and by key (the chunk or shard)."""

    tiles: int = 0
    tiles_rendered: int = 0
    tiles_by_level: collections.Counter[str] = field(default_factory=collections.Counter)
    tiles_by_layer: collections.Counter[str] = field(default_factory=collections.Counter)
    tile_log: list[list[Any]] = field(default_factory=list)
    chunk_reads: int = 0
    index_reads: int = 0
    metadata_reads: int = 0
    bytes_read: int = 0
    cache_hits: int = 0
    reads_by_array: collections.Counter[str] = field(default_factory=collections.Counter)
    keys_read: collections.Counter[str] = field(default_factory=collections.Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    #: at most this many tile requests are kept in ``tile_log``
    LOG = 100_000

    def tile(self, level: int, ty: int, tx: int, t: int, layer: str, *, rendered: bool) -> None:
        with self._lock:
            self.tiles += 1
            self.tiles_rendered += int(rendered)
            self.tiles_by_level[str(level)] += 1
            self.tiles_by_layer[layer] += 1
            if len(self.tile_log) < self.LOG:
                self.tile_log.append([level, ty, tx, t, layer])

    def read(self, key: str, byte_range: ByteRequest | None, size: int) -> None:
        array, sep, _ = key.rpartition("/c/")
        with self._lock:
            self.bytes_read += size
            if not sep:
                self.metadata_reads += 1
            elif isinstance(byte_range, SuffixByteRequest):  # a shard's index, at its end
                self.index_reads += 1
            else:
                self.chunk_reads += 1
                self._used(array, key)

    def _used(self, array: str, key: str) -> None:
        self.reads_by_array[array] += 1
        if len(self.keys_read) < self.LOG:
            self.keys_read[key] += 1

    def hit(self, key: str, byte_range: ByteRequest | None) -> None:
        with self._lock:
            self.cache_hits += 1
            if not isinstance(byte_range, SuffixByteRequest):
                self._used(key.rpartition("/c/")[0], key)

    def reset(self) -> None:
        with self._lock:
            self.tiles = self.tiles_rendered = self.chunk_reads = self.index_reads = self.metadata_reads = 0
            self.cache_hits = 0
            self.bytes_read = 0
            for counter in (self.tiles_by_level, self.tiles_by_layer, self.reads_by_array, self.keys_read):
                counter.clear()
            self.tile_log.clear()

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            return {"tiles": self.tiles, "tiles_rendered": self.tiles_rendered,
                    "tiles_by_level": dict(self.tiles_by_level), "tiles_by_layer": dict(self.tiles_by_layer),
                    "chunk_reads": self.chunk_reads, "index_reads": self.index_reads,
                    "metadata_reads": self.metadata_reads, "bytes_read": self.bytes_read, "cache_hits": self.cache_hits,
                    "reads_by_array": dict(self.reads_by_array), "keys_read": dict(self.keys_read),
                    "tile_log": [list(e) for e in self.tile_log]}


class ReadCache:
    """The bytes of the last reads (a chunk, a shard index), up to ``limit`` bytes, least recently used out first: the
    neighbouring tiles of a view share their chunks (a chunk of 1024 px holds 16 tiles), so each is read from the
    store once, not once per tile (an object store's GET is what a view costs). A read asked for while the same read is
    under way waits for it (:attr:`pending`: the browser asks for several tiles at once)."""

    def __init__(self, limit: int = 256 * 2**20) -> None:
        self.limit, self.size = limit, 0
        self._items: collections.OrderedDict[tuple[str, str], Buffer] = collections.OrderedDict()
        self._lock = threading.Lock()
        #: reads under way, on zarr's event loop (every read of the store runs there)
        self.pending: dict[tuple[Any, str, str], asyncio.Future[Buffer | None]] = {}

    def get(self, key: tuple[str, str]) -> Buffer | None:
        with self._lock:
            buf = self._items.get(key)
            if buf is not None:
                self._items.move_to_end(key)
            return buf

    def put(self, key: tuple[str, str], buf: Buffer) -> None:
        with self._lock:
            if key in self._items or len(buf) > self.limit // 4:
                return
            self._items[key] = buf
            self.size += len(buf)
            while self.size > self.limit:
                self.size -= len(self._items.popitem(last=False)[1])


class CountingStore(WrapperStore[Any]):
    """A read-only zarr store that counts every read from the store into :class:`Counters` (a chunk, a shard index,
    metadata), and keeps the chunks' bytes in a :class:`ReadCache`."""

    def __init__(self, store: Any, counters: Counters | None = None, cache: ReadCache | None = None) -> None:
        super().__init__(store)
        self.counters = counters if counters is not None else Counters()
        self.cache = cache if cache is not None else ReadCache()

    def _with_store(self, store: Any) -> CountingStore:
        return type(self)(store, self.counters, self.cache)

    async def get(self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
                  ) -> Buffer | None:
        if "/c/" not in key:  # metadata is read once, at open: not kept
            buf = await self._store.get(key, prototype, byte_range)
            if buf is not None:
                self.counters.read(key, byte_range, len(buf))
            return buf
        at = (key, repr(byte_range))
        cached = self.cache.get(at)
        if cached is not None:
            self.counters.hit(key, byte_range)
            return cached
        loop = asyncio.get_running_loop()
        under_way = self.cache.pending.get((loop, *at))
        if under_way is not None:  # the same read, asked for by another tile: its bytes
            buf = await asyncio.shield(under_way)
            self.counters.hit(key, byte_range)
            return buf
        future: asyncio.Future[Buffer | None] = loop.create_future()
        self.cache.pending[(loop, *at)] = future
        try:
            buf = await self._store.get(key, prototype, byte_range)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # (retrieved: with nobody waiting, asyncio would log it)
            raise
        finally:
            del self.cache.pending[(loop, *at)]
        future.set_result(buf)
        if buf is not None:
            self.counters.read(key, byte_range, len(buf))
            self.cache.put(at, buf)
        return buf

    async def get_partial_values(self, prototype: BufferPrototype,
                                 key_ranges: Iterable[tuple[str, ByteRequest | None]]) -> list[Buffer | None]:
        return [await self.get(key, prototype, byte_range) for key, byte_range in key_ranges]

    async def _get_many(self, requests: Iterable[tuple[str, BufferPrototype, ByteRequest | None]]
                        ) -> AsyncGenerator[tuple[str, Buffer | None], None]:
        for key, prototype, byte_range in requests:
            yield key, await self.get(key, prototype, byte_range)


def counting_store(store: CubeStore, counters: Counters) -> CountingStore:
    """The cube's zarr store, read-only, with its reads counted."""
    inner: Any
    if isinstance(store.fs, LocalFileSystem):
        inner = LocalStore(store.path, read_only=True)
    else:
        inner = FsspecStore.from_url(store.url, storage_options=dict(store.storage_options or {}), read_only=True)
    return CountingStore(inner, counters)


# --- PNG ---------------------------------------------------------------------------------------------------------


def png_rgba(rgba: np.ndarray, level: int = 6) -> bytes:
    """PNG bytes of a (y, x, 4) uint8 image (8-bit RGBA, no filter, zlib ``level``): tiles need nothing more."""
    h, w, _ = rgba.shape
    raw = np.zeros((h, 1 + 4 * w), np.uint8)  # each row: filter type 0, then its pixels
    raw[:, 1:] = rgba.reshape(h, 4 * w)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw.tobytes(), level)) + chunk(b"IEND", b""))


def composite_rgba(rgb: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(y, x, 4) uint8 of a (3, y, x) composite: the quicklook's stretch (:func:`quicklook.stretched`, the same
    arithmetic), opaque where all three bands have a value, transparent where not."""
    from srcube.pipeline.write.quicklook import stretched

    out = np.empty((*rgb.shape[1:], 4), np.uint8)
    out[..., :3] = stretched(rgb, lo, hi).transpose(1, 2, 0)
    out[..., 3] = np.where(np.isfinite(rgb).all(axis=0), 255, 0)
    return out


def clear_rgba(clear: np.ndarray) -> np.ndarray:
    """(y, x, 4) uint8: :data:`NOT_CLEAR_RGB` where ``clear`` is 0, transparent where it is 1."""
    out = np.zeros((*clear.shape, 4), np.uint8)
    out[..., :3] = NOT_CLEAR_RGB
    out[..., 3] = np.where(clear == 0, 255, 0)
    return out


#: the consistency ramp's colours at 0, 1/3, 2/3 and 1 (dark blue, teal, green, yellow)
_RAMP = np.array([[32, 20, 110], [30, 140, 150], [110, 200, 70], [250, 230, 30]], dtype=np.float32)


def consistency_rgba(error: np.ndarray) -> np.ndarray:
    """(y, x, 4) uint8: the consistency error on :data:`CONSISTENCY_RAMP` (log10), opaque where it has a value."""
    lo, hi = (math.log10(v) for v in CONSISTENCY_RAMP)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.clip((np.log10(np.maximum(error, 1e-30)) - lo) / (hi - lo), 0, 1)
    u = np.nan_to_num(u, nan=0.0) * (len(_RAMP) - 1)
    i = np.minimum(u.astype(int), len(_RAMP) - 2)
    frac = (u - i)[..., None]
    out = np.empty((*error.shape, 4), np.uint8)
    out[..., :3] = np.round(_RAMP[i] * (1 - frac) + _RAMP[i + 1] * frac).astype(np.uint8)
    out[..., 3] = np.where(np.isfinite(error), 255, 0)
    return out


# --- the cube as map tiles -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Level:
    """One level of the map: factor ``f`` (1: full resolution), its size in its own pixels, the group it reads."""

    factor: int
    height: int
    width: int
    group: str

    @property
    def tiles(self) -> tuple[int, int]:
        return -(-self.height // TILE), -(-self.width // TILE)

    def to_json(self) -> dict[str, Any]:
        return {"factor": self.factor, "height": self.height, "width": self.width, "tiles": list(self.tiles),
                "source": f"{self.group}/reflectance" if self.group else "reflectance"}


def _scale(attrs: Mapping[str, Any], url: str) -> int:
    scale = attrs.get("scale")
    if isinstance(scale, bool) or not isinstance(scale, int) or not 2 <= scale <= 16:
        raise CubeAttributeError(f"the cube at {url} has scale {str(scale)[:40]!r}, not a whole number from 2 to 16: "
                                 "the cube is corrupt or crafted: write it again, or ask its sharer for the cube as "
                                 "srcube wrote it")
    return scale


def _epsg(ds: xr.Dataset, attrs: Mapping[str, Any]) -> int | None:
    """The cube's EPSG code: from its CF grid mapping (``spatial_ref``), else its ``crs`` attribute."""
    import pyproj

    ref = ds["spatial_ref"].attrs if "spatial_ref" in ds.variables else {}
    wkt = ref.get("crs_wkt") or ref.get("spatial_ref")
    with contextlib.suppress(pyproj.exceptions.CRSError, TypeError):
        if wkt:
            return pyproj.CRS.from_wkt(str(wkt)).to_epsg()
    match = re.fullmatch(r"EPSG:(\d{4,6})", str(attrs.get("crs", "")))
    return int(match.group(1)) if match else None


class CubeView:
    """A complete srcube cube as map tiles (see the module docstring); opened with :meth:`open`, which refuses
    anything else before a tile is served."""

    def __init__(self, store: CubeStore, counters: Counters | None = None, cache_tiles: int = 512) -> None:
        self.store = store
        self.url = store.url
        self.counters = counters if counters is not None else Counters()
        self.attrs = store.attrs()
        zstore = counting_store(store, self.counters)
        with quiet_consolidated():
            self.ds = xr.open_zarr(zstore, consolidated=True, chunks=None)
        self.scale = _scale(self.attrs, self.url)
        group, factors = overview_levels(self.attrs, self.url)
        ny, nx = self.ds.sizes["y"], self.ds.sizes["x"]
        self.levels: dict[int, Level] = {1: Level(1, ny, nx, "")}
        self._sources: dict[int, xr.Dataset] = {1: self.ds}
        for f in factors:
            path = f"{group}/{f}"
            try:
                with quiet_consolidated():
                    level = xr.open_zarr(zstore, group=path, consolidated=False, chunks=None)
            except (FileNotFoundError, ValueError, KeyError) as exc:
                raise CubeAttributeError(f"the cube at {self.url} has no overview level {path!r}, which its overviews "
                                         f"attribute names ({type(exc).__name__}); write the cube again") from None
            self.levels[f] = Level(f, level.sizes["y"], level.sizes["x"], path)
            self._sources[f] = level
        self.dates = [str(np.datetime_as_string(t, unit="D")) for t in self.ds.time.values]
        self.bands = [str(b) for b in self.ds.band.values]
        self.composites = {"true": true_colour(self.bands)}  # (grey, as the quicklook, without a true colour's bands)
        self.composites.update({name: bands for name in COMPOSITES if name != "true"
                                and (bands := composite_bands(self.bands, name)) is not None})
        self.overlays = [name for name in ("clear", "consistency") if name in self.ds.data_vars]
        self.consistency_projection = self.attrs.get("consistency_projection") is True
        sigma = self.attrs.get("consistency_psf_sigma")  # the projection's PSF, recorded by cubes made with it
        self.psf_sigma = float(sigma) if isinstance(sigma, (int, float)) and not isinstance(sigma, bool) and \
            0.05 <= float(sigma) <= 2.0 else None
        self.sensor = str(self.attrs.get("sensor", "sentinel-2"))
        self._projection: Any = None
        self._stretch: dict[tuple[int, str], tuple[float, float]] = {}
        self._tiles: collections.OrderedDict[tuple[Any, ...], bytes] = collections.OrderedDict()
        self._cache_tiles = cache_tiles
        self._lock = threading.Lock()

    @classmethod
    def open(cls, url: str, storage_options: Mapping[str, Any] | None = None,
             counters: Counters | None = None) -> CubeView:
        """The cube at ``url`` (a path or an fsspec URL with ``storage_options``), checked: FileNotFoundError when
        nothing is there, NotACubeError for anything that is not an srcube cube, IncompleteCubeError for an
        unfinished cube (or one an append is growing), CorruptCubeError for one that lacks chunks, CubeAttributeError
        for attributes srcube did not write."""
        store = CubeStore(url, storage_options)
        status = store.status()
        shown = redact(url)
        if status == "absent":
            raise FileNotFoundError(f"{shown}: nothing there; give the path or URL of a complete srcube cube")
        if status in ("empty", "foreign"):
            what = "an empty folder" if status == "empty" else "other data"
            raise NotACubeError(f"{shown} is not an srcube cube ({what}); srcube view shows cubes that srcube run "
                                "wrote: give the path of one")
        if status == "appending":
            raise IncompleteCubeError(f"the cube at {shown} is being appended to, or an append to it was cut short; "
                                      "run that append again (--mode append) to finish it, then view it")
        if status != "complete":
            raise IncompleteCubeError(f"the cube at {shown} is not complete (the run that wrote it did not finish); "
                                      "run the same command again to finish it, then view it")
        check_present(store)
        return cls(store, counters)

    # --- what the page needs to know ---------------------------------------------------------------------------

    @property
    def projection(self) -> Any:
        """The consistency projection's operator for this cube (:class:`models.consistency.Projection`): the recorded
        PSF, or the sensor's own for a cube made without the projection. Made on first use: torch is imported only
        when the input's view is asked for, so the server starts without it."""
        if self._projection is None:
            from srcube.models.consistency import Projection
            from srcube.models.psf import SENSOR_PSF, Degradation

            sensor = self.sensor if self.sensor in SENSOR_PSF else "sentinel-2"
            sigma = self.psf_sigma if self.psf_sigma is not None else SENSOR_PSF[sensor]
            self._projection = Projection(self.scale, Degradation(sigma, "point"), sensor=sensor)
        return self._projection

    def transform(self) -> list[float]:
        """The full-resolution grid's affine transform (a, b, c, d, e, f) of pixel corners, from the cube's ``x`` and
        ``y`` pixel centres: ``X = a col + b row + c``, ``Y = d col + e row + f``."""
        x, y = self.ds.x.values.astype(float), self.ds.y.values.astype(float)
        res = float(self.attrs.get("resolution", 1.0))
        dx = float(x[1] - x[0]) if x.size > 1 else res
        dy = float(y[1] - y[0]) if y.size > 1 else -res
        return [dx, 0.0, float(x[0]) - dx / 2, 0.0, dy, float(y[0]) - dy / 2]

    def input_view(self) -> dict[str, Any]:
        """How the swipe's bicubic view of the input is made, and when it is exact (shown by the page)."""
        psf = f"sigma {self.psf_sigma:.3f} x scale" if self.psf_sigma is not None else "the sensor's own"
        how = (f"derived per tile, not stored: the super-resolved pixels degraded by the consistency projection's "
               f"operator ({self.sensor} PSF, {psf}, point sampling at the input pixel centres, x{self.scale}), then "
               "bicubic back up")
        exact = ("exact: this cube was made with the consistency projection, so the degraded image is its input up to "
                 "the consistency layer's error (but for the few input pixels along the cube's outer edge)"
                 if self.consistency_projection else
                 "approximate: this cube was made without the consistency projection, so the degraded image is an "
                 "estimate of its input")
        return {"stored": False, "exact": self.consistency_projection, "text": f"{how}; {exact}. Zoomed out "
                "(overview levels) both sides show the overviews."}

    def info(self) -> dict[str, Any]:
        """What the page shows and needs: grid, CRS, dates, layers, levels, provenance (all from the cube)."""
        epsg = _epsg(self.ds, self.attrs)
        name = PurePosixPath(self.url.rstrip("/")).name
        layers = [*self.composites, *(f"{c}-input" for c in self.composites), *self.overlays]
        return {
            "name": name, "url": redact(self.url), "epsg": epsg, "crs": f"EPSG:{epsg}" if epsg else
            str(self.attrs.get("crs", "unknown")), "transform": self.transform(), "width": self.levels[1].width,
            "height": self.levels[1].height, "resolution": self.attrs.get("resolution"), "dates": self.dates,
            "bands": self.bands, "composites": [{"id": k, "name": LAYER_NAMES[k], "bands": v}
                                                for k, v in self.composites.items()],
            "overlays": [{"id": k, "name": LAYER_NAMES[k]} for k in self.overlays], "layers": layers,
            "levels": [lvl.to_json() for lvl in sorted(self.levels.values(), key=lambda v: v.factor)],
            "tile": TILE, "model": self.attrs.get("model"), "scale": self.scale,
            "consistency_projection": self.consistency_projection, "input_view": self.input_view(),
            "stretch": f"per date and composite: the 2nd to 98th percentile of the three bands in srcube quicklook's "
                       f"{QUICKLOOK_SIDE} px frame (the same pixels)",
            "consistency_ramp": list(CONSISTENCY_RAMP), "not_clear_rgb": list(NOT_CLEAR_RGB)}

    def legend(self, t: int, layer: str) -> dict[str, Any]:
        """The stretch of a composite layer on date ``t`` (reflectance at 0 and 255), or the consistency ramp."""
        self._check(1, 0, 0, t, layer)
        if layer in ("clear", "consistency"):
            return {"layer": layer, "ramp": list(CONSISTENCY_RAMP)} if layer == "consistency" else {"layer": layer}
        lo, hi = self.stretch(t, layer.removesuffix("-input"))
        return {"layer": layer, "lo": lo, "hi": hi, "bands": self.composites[layer.removesuffix("-input")]}

    def stretch(self, t: int, composite: str) -> tuple[float, float]:
        """(lo, hi) of ``composite`` on date ``t``: :func:`quicklook.stretch_limits` of the frame ``srcube quicklook``
        reads at its default size (the level :func:`overviews.open_level` picks, decimated the same way), once."""
        key = (t, composite)
        with self._lock:
            if key in self._stretch:
                return self._stretch[key]
        ny, nx = self.levels[1].height, self.levels[1].width
        factors = [f for f in self.levels if f > 1]
        fits = [f for f in factors if max(ny // f, nx // f) >= QUICKLOOK_SIDE]  # as overviews.open_level chooses
        source = self._sources[max(fits) if fits else min(factors)] if factors else self.ds
        with checked_reads(self.url):
            limits = stretch_limits(decimated(source, t, self.composites[composite], QUICKLOOK_SIDE))
        with self._lock:
            self._stretch[key] = limits
        return limits

    # --- tiles --------------------------------------------------------------------------------------------------

    def _check(self, level: int, ty: int, tx: int, t: int, layer: str) -> Level:
        if layer not in LAYER_NAMES:
            raise TileRequestError(f"layer {layer[:40]!r} is not one of {', '.join(LAYER_NAMES)}")
        base = layer.removesuffix("-input")
        if base not in self.composites and base not in self.overlays:
            raise TileRequestError(f"this cube has no layer {layer!r} (bands {', '.join(self.bands)})", 404)
        if not 0 <= t < len(self.dates):
            raise TileRequestError(f"date index t={t} is not one of the cube's 0..{len(self.dates) - 1}", 404)
        lvl = self.levels.get(level)
        if lvl is None:
            raise TileRequestError(f"no level {level}; the levels are {', '.join(map(str, sorted(self.levels)))}", 404)
        rows, cols = lvl.tiles
        if not (0 <= ty < rows and 0 <= tx < cols):
            raise TileRequestError(f"level {level} has tiles 0..{rows - 1} x 0..{cols - 1}, not {ty}/{tx}", 404)
        return lvl

    def tile_png(self, level: int, ty: int, tx: int, t: int, layer: str) -> bytes:
        """The PNG of one tile (see the module docstring), from the tile cache or read and drawn now."""
        lvl = self._check(level, ty, tx, t, layer)
        key = (level, ty, tx, t, layer)
        with self._lock:
            png = self._tiles.get(key)
            if png is not None:
                self._tiles.move_to_end(key)
        rendered = png is None
        if png is None:
            with checked_reads(self.url):
                png = png_rgba(self._rgba(lvl, ty, tx, t, layer))
            with self._lock:
                self._tiles[key] = png
                while len(self._tiles) > self._cache_tiles:
                    self._tiles.popitem(last=False)
        self.counters.tile(level, ty, tx, t, layer, rendered=rendered)
        return png

    def _rgba(self, lvl: Level, ty: int, tx: int, t: int, layer: str) -> np.ndarray:
        r0, c0 = ty * TILE, tx * TILE
        r1, c1 = min(r0 + TILE, lvl.height), min(c0 + TILE, lvl.width)
        f = lvl.factor
        if layer in ("clear", "consistency"):
            # no overview levels: every f-th full-resolution pixel of the window (each chunk decompressed once)
            values = np.asarray(self.ds[layer].isel(time=t, y=slice(r0 * f, r1 * f, f), x=slice(c0 * f, c1 * f, f))
                                .values)
            return clear_rgba(values) if layer == "clear" else consistency_rgba(values.astype(np.float32))
        composite = layer.removesuffix("-input")
        lo, hi = self.stretch(t, composite)
        if layer.endswith("-input") and f == 1:
            rgb = self.input_window(t, self.composites[composite], r0, r1, c0, c1)
        else:
            rgb = self.window(f, t, self.composites[composite], r0, r1, c0, c1)
        return composite_rgba(rgb, lo, hi)

    def window(self, level: int, t: int, bands: list[str], r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """(3, y, x) float32 reflectance of ``bands`` on date ``t`` in rows ``r0:r1`` and columns ``c0:c1`` of a level:
        only that window is read."""
        refl = self._sources[level].reflectance
        idx = [self.bands.index(b) for b in bands]
        return np.asarray(refl.isel(time=t, band=idx, y=slice(r0, r1), x=slice(c0, c1)).values, dtype=np.float32)

    def input_window(self, t: int, bands: list[str], r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """(3, y, x) float32: the bicubic view of the input in that full-resolution window (see the module
        docstring), from the window with a margin of the operator's and bicubic's reach, aligned on input pixels."""
        import torch

        from srcube.models.interp import Interpolation

        s, ny, nx = self.scale, self.levels[1].height, self.levels[1].width
        margin = (self.projection.reach + BICUBIC_REACH + 1) * s
        lr_rows, lr_cols = (ny // s) * s, (nx // s) * s  # whole input pixels only
        R0, C0 = max(0, (r0 // s) * s - margin), max(0, (c0 // s) * s - margin)
        R1, C1 = min(lr_rows, -(-r1 // s) * s + margin), min(lr_cols, -(-c1 // s) * s + margin)
        hr = self.window(1, t, bands, R0, R1, C0, C1)
        valid = np.isfinite(hr)
        with torch.no_grad():
            x = torch.from_numpy(np.where(valid, hr, 0.0).astype(np.float32))[None]
            up = Interpolation("bicubic", s).sr(self.projection.degrade(x))[0].numpy()
        out = np.full((len(bands), r1 - r0, c1 - c0), np.nan, np.float32)
        h, w = min(r1, R1) - r0, min(c1, C1) - c0
        out[:, :h, :w] = up[:, r0 - R0 : r0 - R0 + h, c0 - C0 : c0 - C0 + w]
        out[:, :h, :w][~valid[:, r0 - R0 : r0 - R0 + h, c0 - C0 : c0 - C0 + w]] = np.nan
        return out


def parse_tile_path(path: str, query: Mapping[str, list[str]]) -> tuple[int, int, int, int, str]:
    """(level, ty, tx, t, layer) of ``/tiles/{level}/{ty}/{tx}.png?t=..&layer=..`` (TileRequestError if malformed)."""
    match = _TILE_PATH.match(path)
    if not match:
        raise TileRequestError(f"not a tile path: {path[:80]!r}; tiles are /tiles/LEVEL/TY/TX.png?t=DATE&layer=LAYER",
                               404)
    level, ty, tx = (int(g) for g in match.groups())
    return level, ty, tx, query_int(query, "t"), query_one(query, "layer")


def query_one(query: Mapping[str, list[str]], name: str) -> str:
    """The one value of parameter ``name`` of a parsed query string (TileRequestError for none or several)."""
    values = query.get(name, [])
    if len(values) != 1:
        raise TileRequestError(f"give one {name}= parameter (got {len(values)})")
    return values[0]


def query_int(query: Mapping[str, list[str]], name: str) -> int:
    """:func:`query_one` as a whole number of at most 7 ASCII digits (TileRequestError otherwise)."""
    value = query_one(query, name)
    if not re.fullmatch(r"[0-9]{1,7}", value):
        raise TileRequestError(f"{name}={value[:40]!r} is not a whole number")
    return int(value)
