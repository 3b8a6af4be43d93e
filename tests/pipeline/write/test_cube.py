"""The cube's schema (pipeline.write.cube) on small in-memory cubes: shards and inner chunks, packing, the CF
attributes, the request hash and the write batches. The sample's cubes check the same on disk (test_region)."""

import ast

import dask.array as da
import numpy as np
import pytest
import xarray as xr

from srcube.pipeline.errors import InvalidOptionError
from srcube.pipeline.options import RunOptions
from srcube.pipeline.write.cube import (
    INT16_FILL,
    TIME_ENCODING,
    chunk_shape,
    conform,
    encoding,
    request_hash,
    write_batches,
)
from tests.support.helpers import REPO


def _cube(h: int = 60, w: int = 50, lazy: bool = False) -> xr.Dataset:
    refl = np.linspace(-4.0, 4.0, 2 * 3 * h * w, dtype=np.float32).reshape(2, 3, h, w)
    clear = np.ones((2, h, w), np.uint8)
    data = da.from_array(refl, chunks=(1, 3, 24, 24)) if lazy else refl
    mask = da.from_array(clear, chunks=(1, 24, 24)) if lazy else clear
    return xr.Dataset({"reflectance": (("time", "band", "y", "x"), data), "clear": (("time", "y", "x"), mask),
                       "clear_count": (("y", "x"), clear.sum(0).astype(np.uint16))},
                      coords={"time": np.array(["2024-06-01", "2024-06-06"], "datetime64[ns]"),
                              "band": np.array(["B02", "B03", "B04"]), "spatial_ref": 0,
                              "items": ("time", np.array(["a", "b"]))})


def test_one_shard_per_sr_tile_every_array_checked_and_int16_packing():
    cube = _cube()
    assert chunk_shape(cube, 40) == (40, 40) and chunk_shape(cube, 400) == (60, 50)  # in memory: the SR tile
    assert chunk_shape(_cube(lazy=True), 400) == (24, 24)  # lazy: its Dask chunks, which are the SR tiles
    enc = encoding(cube, 40, "int16")
    assert enc["reflectance"]["shards"] == (1, 3, 40, 40) and enc["reflectance"]["chunks"] == (1, 3, 40, 40)
    assert enc["clear"]["shards"] == (1, 40, 40) and enc["clear_count"]["shards"] == (40, 40)
    assert all(len(enc[str(v)]["compressors"]) == 2 for v in cube.variables)  # coordinates too: blosc, crc32c
    assert {k: enc["time"][k] for k in TIME_ENCODING} == TIME_ENCODING
    assert enc["reflectance"]["dtype"] == "int16" and enc["reflectance"]["_FillValue"] == INT16_FILL
    assert "dtype" not in encoding(cube, 40, "float32")["reflectance"]


def test_conform_clips_for_int16_rounds_bits_and_names_the_grid_mapping():
    packed = conform(_cube(), RunOptions(dtype="int16"))
    assert float(packed.reflectance.max()) == pytest.approx(3.2767) and float(packed.reflectance.min()) < -3.27
    rounded = conform(_cube(lazy=True), RunOptions(keepbits=5)).reflectance
    assert isinstance(rounded.data, da.Array) and rounded.attrs["bitround_keepbits"] == 5
    assert np.all(rounded.values.view(np.uint32) & np.uint32(2**18 - 1) == 0)  # 23 - 5 dropped mantissa bits
    cube = conform(_cube(), RunOptions())
    assert cube.band.dtype == object and cube["items"].dtype == object  # zarr v3 variable-length strings
    assert all(cube[v].attrs["grid_mapping"] == "spatial_ref" for v in ("reflectance", "clear", "clear_count"))
    assert cube.reflectance.attrs["units"] == "1" and cube.time.attrs["long_name"] == "acquisition time"


def test_the_request_hash_follows_content_not_when_it_was_made():
    attrs = {"model": "bicubic", "bbox": [4.4, 51.4, 4.5, 51.5], "frames": '[{"time": "2024-06-01", "kept": true}]',
             "created": "2024-06-01T10:00:00"}
    base = request_hash(attrs, RunOptions(), (96, 96))
    assert request_hash({**attrs, "created": "2025-01-01T00:00:00"}, RunOptions(), (96, 96)) == base
    assert request_hash(attrs, RunOptions(), (48, 96)) != base
    assert request_hash(attrs, RunOptions(dtype="int16"), (96, 96)) != base
    assert request_hash({**attrs, "frames": '[{"time": "2024-06-01", "kept": false}]'}, RunOptions(), (96, 96)) != base


def test_write_batches_keep_a_locations_layers_together_in_a_fixed_order():
    cube = _cube(lazy=True)
    cube["clear_count"] = cube.clear_count.chunk({"y": 24, "x": 24})
    batches = write_batches(cube, 2)
    assert batches == write_batches(cube, 2)
    every = [w for b in batches for w in b]
    assert len(every) == len(set(every)) == 2 * 9 + 2 * 9 + 9  # reflectance, clear per date; clear_count once
    for batch in batches:
        places = {(dict(zip(cube[n].dims, i, strict=True)).get("time", -1), i[-2], i[-1]) for n, i in batch}
        assert len(places) <= 2
        assert all(("reflectance", (t, 0, y, x)) in batch for t, y, x in places if t >= 0)
    with pytest.raises(InvalidOptionError, match="batch size must be >= 1"):
        write_batches(cube, 0)


def test_write_builds_no_graph():
    """The write package keeps the schema, the store and the views: it imports neither super-resolution nor
    assembly (the graph is pipeline.build's), not even inside a function."""
    for path in sorted((REPO / "pipeline" / "write").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            assert not [n for n in names if n.startswith(("srcube.pipeline.sr", "srcube.pipeline.assemble",
                                                          "srcube.pipeline.build"))], f"{path.name}:{node.lineno}"
