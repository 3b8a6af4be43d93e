"""The cube's schema: its variables' chunk encoding and packing (codecs, shards, int16, bit rounding, CF
names), its provenance attributes, the hash that identifies a request's content (resume) and its write
batches. The graph that computes the variables is :mod:`srcube.pipeline.build`'s; nothing here runs a model."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from srcube import models
from srcube.pipeline.options import RunOptions

INT16_SCALE = 1e-4
INT16_FILL = -32768
#: every array's codec: Blosc with zstd at level 5 after a bit shuffle (neighbouring reflectances share their
#: high bits; shuffled, zstd finds the runs), then a crc32c checksum of each compressed chunk (zarr v3 ``crc32c``),
#: so that a flipped or lost byte raises on read instead of reading back as other values (the shard index has
#: its own). Stated in the cube's ``codec`` attribute.
CODEC_LEVEL = 5
CODEC_NOTE = f"blosc zstd level {CODEC_LEVEL}, bitshuffle, crc32c per chunk"
#: zarr v3 sharding: one shard is what one write task writes (a date's SR tile, every band), so every shard
#: has one writer and the chunk manifest stays exact. Inside it, chunks of every band and at most INNER_CHUNK px
#: a side (a divisor of the tile) are what a reader decompresses for one pixel: one request per date for a
#: pixel's time series, where a chunk per band needs one per band (bench/cube_read.py: 2.7x faster from an
#: object store); smaller chunks compress worse and slow full-date reads. The learned models' 2688 px output
#: tiles are cut in 3 x 3.
INNER_CHUNK = 1024
#: how time (and time bounds) is stored: integer milliseconds since the epoch, so any later date appends
#: exactly (xarray's default, whole days since the first date, cannot hold a later acquisition's time of day)
TIME_ENCODING = {"units": "milliseconds since 1970-01-01", "calendar": "proleptic_gregorian", "dtype": "int64"}
#: CF standard names (CF standard name table) of the cube's variables that have one
STANDARD_NAMES = {"reflectance": "surface_bidirectional_reflectance"}


def cube_attrs(stack: xr.Dataset, model_ref: Any, local_model: Any, *, multi: bool, sensor: str, profile: Any,
               collection: str, region: tuple[float, ...], days: str, bands: Sequence[str], items_found: int,
               stack_cache: str, from_cache: bool, min_clear: float, sharpener: Mapping[str, Any],
               frames: list[dict[str, Any]]) -> dict[str, Any]:
    """The provenance attributes of a cube: what made it (srcube, model, weights), from what (catalog,
    items, frames and their harmonisation), on which grid, and with which choices."""
    from srcube.pipeline import __version__
    from srcube.pipeline.redact import redact

    attrs = {
        "srcube_version": __version__,
        "title": "srcube super-resolved reflectance cube",
        **model_attrs(model_ref, local_model),
        "mode": "multi-frame" if multi else "single-image",
        "scale": int(local_model.scale),
        "sensor": sensor,
        "catalog": redact(profile.name),
        "catalog_url": redact(profile.url) if profile.kind != "sample" else "local sample STAC API",
        "collection": collection,
        "bbox": list(region),
        "dates": days,
        "bands": list(bands),
        "crs": f"EPSG:{stack.attrs['grid_epsg']}",
        "input_resolution": float(stack.attrs["resolution"]),
        "resolution": float(stack.attrs["resolution"]) / int(local_model.scale),
        "stac_items_found": items_found,
        # input pixels read beyond the bbox on each side so that neighbouring cubes join without seams
        "halo_pixels": int(stack.attrs.get("halo", 0)),
        "stack_cache": stack_cache,
        "stack_from_cache": from_cache,
        "min_clear": min_clear,
        "clear_classes": list(stack.attrs.get("clear_classes", [])),
        "harmonize": str(stack.attrs.get("harmonize", "")),
        # band sharpening: the run's choice and model, and the bands it put on the grid (json lists)
        **sharpener,
        "sharpened_bands": str(stack.attrs.get("sharpened_bands", "[]")),
        "interpolated_bands": str(stack.attrs.get("interpolated_bands", "[]")),
        "frames": json.dumps(frames),
        # items left out before assembly, each with its bad assets and why (pipeline.search.assets)
        "excluded_items": str(stack.attrs.get("excluded_items", "[]")),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    if "georeferencing" in stack.attrs:
        attrs["georeferencing"] = stack.attrs["georeferencing"]
    return attrs


def model_attrs(ref: Any, local: Any) -> dict[str, Any]:
    """Provenance of the model: name, kind, weights hash, and whether the weights were trained."""
    meta = getattr(local, "weights_meta", None)
    if meta is not None:
        return {"model": local.name, "model_kind": "learned", "weights": meta.name,
                "weights_sha256": meta.sha256, "model_trained": bool(meta.trained),
                "training_data": str(meta.training.get("data", "unknown"))}
    if isinstance(ref, models.ModelSpec):  # a registered baseline: nothing to train
        return {"model": local.name, "model_kind": models.entry(ref.name).kind, "weights": "none",
                "weights_sha256": "none", "model_trained": False, "training_data": "none (no parameters)"}
    return {"model": local.name or type(local).__name__, "model_kind": "model object", "weights": "unknown",
            "weights_sha256": "unknown (model object passed in memory)", "model_trained": "unknown",
            "training_data": "unknown"}


def chunk_shape(cube: xr.Dataset, out_tile: int) -> tuple[int, int]:
    """The (y, x) zarr chunk of the cube's layers: its SR tiles' output, the Dask chunks of a lazy cube (a
    regular grid but for a last, smaller or merged, tile: only that tile writes the chunks it spans), or
    ``out_tile`` px (the SR tile times the scale) at most the cube's size for one in memory."""
    data = cube.reflectance.data
    if isinstance(data, da.Array):
        return int(data.chunks[-2][0]), int(data.chunks[-1][0])
    return min(out_tile, cube.sizes["y"]), min(out_tile, cube.sizes["x"])


def codec() -> Any:
    """The zarr v3 compressor of every array of a cube (:data:`CODEC_NOTE`)."""
    from zarr.codecs import BloscCodec

    return BloscCodec(cname="zstd", clevel=CODEC_LEVEL, shuffle="bitshuffle")


def compressors() -> list[Any]:
    """The bytes-to-bytes codecs of every array of a cube (inside the shards: of each inner chunk): the
    compressor, then the chunk's crc32c (:data:`CODEC_NOTE`; :mod:`pipeline.write.verify` checks them)."""
    from zarr.codecs import Crc32cCodec

    return [codec(), Crc32cCodec()]


def inner_chunk(n: int, most: int = INNER_CHUNK) -> int:
    """The inner chunk (px) of a shard ``n`` px long: its largest divisor up to ``most``, or ``n`` itself when
    every such divisor is under a quarter of ``most`` (tiny chunks cost more in index and calls than they save)."""
    if n <= most:
        return n
    best = max(d for d in range(1, most + 1) if n % d == 0)
    return best if best >= most // 4 else n


def encoding(cube: xr.Dataset, out_tile: int, dtype: str) -> dict[str, Any]:
    """The zarr encoding of every variable of ``cube``: one shard per SR tile (:func:`chunk_shape`, ``out_tile``
    as there) cut into inner chunks, the codecs, the time units, and int16 packing for ``dtype="int16"``."""
    ty, tx = chunk_shape(cube, out_tile)
    iy, ix = inner_chunk(ty), inner_chunk(tx)
    data = cube.reflectance.data
    bands = int(data.chunks[1][0]) if isinstance(data, da.Array) else int(cube.sizes.get("band", 1))
    enc: dict[str, Any] = {"reflectance": {"chunks": (1, bands, iy, ix), "shards": (1, bands, ty, tx)}}
    for name, var in cube.data_vars.items():
        if var.dims == ("time", "y", "x"):
            enc[str(name)] = {"chunks": (1, iy, ix), "shards": (1, ty, tx)}
        elif var.dims == ("y", "x"):
            enc[str(name)] = {"chunks": (iy, ix), "shards": (ty, tx)}
    for name in cube.variables:  # coordinates too: every stored byte is checked
        enc.setdefault(str(name), {})["compressors"] = compressors()
    for name in ("time", "time_bounds"):
        if name in cube.variables:
            enc.setdefault(name, {}).update(TIME_ENCODING)
    if dtype == "int16":
        # float32 packing attributes make readers unpack to float32 (CF: their type is the unpacked type)
        enc["reflectance"].update(dtype="int16", scale_factor=np.float32(INT16_SCALE), add_offset=np.float32(0.0),
                                  _FillValue=INT16_FILL)
    return enc


#: attributes that identify what a cube holds (not when or how fast it was made)
_IDENTITY = ("srcube_version", "model", "weights_sha256", "mode", "scale", "sensor", "catalog", "collection", "bbox",
             "cell", "dates", "bands", "crs", "input_resolution", "stac_item_ids", "min_clear", "clear_classes",
             "harmonize", "windows", "n_views", "window", "consistency_projection", "halo_pixels", "consistency_psf",
             "sharpen", "sharpen_model", "sharpen_weights_sha256", "sharpened_bands")


def request_hash(attrs: Mapping[str, Any], opts: RunOptions, chunks: tuple[int, int] | None = None) -> str:
    """A hash of everything that decides a cube's content and chunking (``chunks``: the (y, x) chunk);
    equal hashes may resume."""
    doc = {k: attrs.get(k) for k in _IDENTITY}
    doc["chunks"] = list(chunks) if chunks else None
    doc["frames"] = [(f["time"], f["kept"]) for f in json.loads(attrs.get("frames", "[]"))]
    options = {k: getattr(opts, k) for k in ("tile", "resolution", "dtype", "boundary", "precision", "frames_per_task",
                                             "keepbits")}
    if opts.engine != "torch":  # onnxruntime's values differ from torch's in the last bits; torch cubes keep their hash
        options["engine"] = opts.engine
    doc["options"] = options
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:32]


def bitround(block: np.ndarray, keepbits: int) -> np.ndarray:
    """``block`` (float32) rounded to ``keepbits`` mantissa bits, to nearest, ties to even (numcodecs BitRound)."""
    from numcodecs import BitRound

    return np.asarray(BitRound(keepbits).encode(np.ascontiguousarray(block))).view(block.dtype).reshape(block.shape)


def conform(cube: xr.Dataset, opts: RunOptions) -> xr.Dataset:
    """``cube`` as the schema stores it: reflectance clipped to what int16 packing holds (``dtype="int16"``)
    and bit-rounded (``keepbits``), string coordinates as variable-length strings (zarr v3 has no fixed-width
    unicode type), and the CF attributes (``grid_mapping``, ``standard_name``, ``units``, time's names)."""
    if opts.dtype == "int16":  # keep values representable: int16 would wrap
        lim = 32767 * INT16_SCALE
        cube["reflectance"] = cube.reflectance.clip(-lim, lim)
    if opts.keepbits is not None:  # round to nearest, ties to even, on keepbits mantissa bits (numcodecs BitRound)
        refl = cube.reflectance
        data = da.map_blocks(bitround, refl.data, opts.keepbits, dtype=np.float32) \
            if isinstance(refl.data, da.Array) else bitround(np.asarray(refl.values), opts.keepbits)
        cube["reflectance"] = refl.copy(data=data)
        cube["reflectance"].attrs["bitround_keepbits"] = opts.keepbits
    # variable-length strings have a zarr v3 data type; fixed-width numpy unicode has none
    cube = cube.assign_coords(band=np.array([str(b) for b in cube.band.values], dtype=object))
    for coord in ("items", "window_end"):
        if coord in cube.coords:
            cube = cube.assign_coords({coord: ("time", np.array([str(v) for v in cube[coord].values], dtype=object))})
    for name, var in cube.data_vars.items():
        var.encoding["coordinates"] = "spatial_ref"  # keep spatial_ref a coordinate on read
        if {"y", "x"} <= set(var.dims):
            var.attrs["grid_mapping"] = "spatial_ref"  # CF: where readers that follow it find the CRS
        if str(name) in STANDARD_NAMES:
            var.attrs["standard_name"] = STANDARD_NAMES[str(name)]
        if np.issubdtype(var.dtype, np.number) and "flag_values" not in var.attrs:
            var.attrs.setdefault("units", "1")
    cube["time"].attrs.update(standard_name="time", long_name="acquisition time" if "window_end" not in cube.coords
                              else "start of the composite window")
    return cube


def write_batches(cube: xr.Dataset, size: int) -> list[list[tuple[str, tuple[int, ...]]]]:
    """All chunk writes of the cube (done or not) in batches of at most ``size`` output locations (time, y, x
    chunk), in a fixed order: the same request always gives the same batches, so a re-run can recognise
    finished ones. The variables of one location go into the same batch, so its super-resolution (which
    ``clear`` also depends on) runs once."""
    from srcube.pipeline.errors import InvalidOptionError

    if size < 1:
        raise InvalidOptionError(f"batch size must be >= 1, got {size}")
    every = [(str(name), idx) for name, var in cube.variables.items() if isinstance(var.data, da.Array)
             for idx in np.ndindex(*var.data.numblocks)]
    groups: dict[tuple[int, int, int], list[tuple[str, tuple[int, ...]]]] = {}
    for name, idx in every:
        at = dict(zip(cube[name].dims, idx, strict=True))
        groups.setdefault((at.get("y", 0), at.get("x", 0), at.get("time", -1)), []).append((name, idx))
    keys = sorted(groups)
    return [[w for k in keys[i:i + size] for w in groups[k]] for i in range(0, len(keys), size)]
