"""Checked bytes (issue 22, finding 3): every chunk a cube stores carries its crc32c and every chunk is written, so a
flipped byte raises on read and a lost or cut shard is damage, not "no data"; ``verify`` reads every chunk and names
the damaged ones by date and tile, ``repair`` rewrites exactly those from the cube's recorded request, giving back
the bytes of the uninterrupted run. The cubes are real runs over the sample archive behind a real STAC API."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dask
import numpy as np
import pytest
import xarray as xr
import zarr

from srcube.pipeline import run_region
from srcube.pipeline.errors import (
    CorruptCubeError,
    IncompleteCubeError,
    RepairError,
    UnverifiableCubeError,
)
from srcube.pipeline.testing import sample
from srcube.pipeline.write.cube import compressors
from srcube.pipeline.write.store import CubeStore, open_cube
from srcube.pipeline.write.verify import check_present, checked_reads, repair, verify

pytestmark = pytest.mark.integration

BBOX = sample.DEFAULT_BBOX
SHORT = "2024-06-12/2024-06-22"  # two clear days
FAST = {"tile": 64, "model": "bicubic"}  # 5 x 5 tiles of 240-252 px: 50 reflectance shards


def _files(root: Path) -> dict[str, bytes]:
    """Every file of a cube (chunks and metadata), by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _stamps(root: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of every file: a rewritten file (zarr writes a new file and renames it) changes both."""
    return {str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def reference(sample_url, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("verify") / "ref.zarr"
    run_region(BBOX, SHORT, catalog=sample_url, out=str(out), **FAST)
    return out


@pytest.fixture
def cube(reference, tmp_path) -> Path:
    """A copy of the reference cube, to damage."""
    out = tmp_path / "cube.zarr"
    shutil.copytree(reference, out)
    return out


def _shard(cube: Path, t: int = 1, y: int = 1, x: int = 2) -> Path:
    return cube / "reflectance" / "c" / str(t) / "0" / str(y) / str(x)


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def test_every_array_checksums_its_chunks_and_the_cube_says_so(reference):
    store = CubeStore(str(reference))
    group = zarr.open_group(str(reference), mode="r")
    arrays = dict(group.members(max_depth=None))
    assert "overviews/4/reflectance" in arrays and "time" in arrays and "spatial_ref" in arrays
    for path, node in arrays.items():
        if not isinstance(node, zarr.Array):
            continue
        codecs = node.metadata.to_dict()["codecs"]
        inner = codecs[0]["configuration"]["codecs"] if codecs[0]["name"] == "sharding_indexed" else codecs
        assert [c["name"] for c in inner[-2:]] == ["blosc", "crc32c"], path
    assert store.attrs()["codec"] == "blosc zstd level 5, bitshuffle, crc32c per chunk"
    report = verify(store)
    assert report.ok and report.arrays == sum(isinstance(n, zarr.Array) for n in arrays.values())
    assert report.chunks >= 50 + 50 + 25 and report.inner_chunks == report.chunks  # tiles under 1024 px: 1 a shard
    request = json.loads(store.attrs()["request"])  # what a repair runs again: no output, no credentials
    assert request["dates"] == SHORT and request["model"] == "bicubic" and request["options"] == {"tile": 64,
                                                                                                  "yes": False}


def test_chunks_of_only_the_fill_value_are_written_too(tmp_path):
    # zarr leaves out chunks that hold only the fill value: an all-NaN (or all-cloudy) tile would have no shard,
    # and a lost shard could not be told from it
    ds = xr.Dataset({"reflectance": (("time", "band", "y", "x"), np.full((1, 2, 8, 8), np.nan, np.float32)),
                     "clear": (("time", "y", "x"), np.zeros((1, 8, 8), np.uint8))})
    ds["reflectance"][0, :, :4, :4] = 0.1
    ds.attrs["srcube_version"] = "test"
    ds = ds.chunk({"band": -1, "y": 4, "x": 4})
    store = CubeStore(str(tmp_path / "c.zarr"))
    enc = {"reflectance": {"chunks": (1, 2, 4, 4), "shards": (1, 2, 4, 4), "compressors": compressors()},
           "clear": {"chunks": (1, 4, 4), "shards": (1, 4, 4), "compressors": compressors()}}
    dask.compute(store.write_template(ds, enc))
    store.finalize()
    assert sorted(p.name for p in (tmp_path / "c.zarr" / "reflectance" / "c" / "0" / "0").rglob("*")
                  if p.is_file()) == ["0", "0", "1", "1"]
    assert len([p for p in (tmp_path / "c.zarr" / "clear" / "c").rglob("*") if p.is_file()]) == 4
    assert verify(store).ok


@pytest.mark.parametrize("offset", [0, 7, 100, 1000, "middle", -30, -20, -5, -1])
def test_a_flipped_byte_raises_on_read_and_verify_names_its_date_and_tile(cube, offset):
    shard = _shard(cube)
    size = shard.stat().st_size
    at = size // 2 if offset == "middle" else int(offset) % size
    _flip(shard, at)
    ds = open_cube(str(cube))
    with pytest.raises(ValueError, match="checksum"):
        ds.reflectance.isel(time=1, y=slice(240, 480), x=slice(504, 756)).values  # noqa: B018
    with pytest.raises(CorruptCubeError, match="srcube verify"), checked_reads(str(cube)):
        ds.reflectance.isel(time=1).values  # noqa: B018
    report = verify(str(cube))
    [d] = report.damage
    in_index = at >= size - 20  # 1 inner chunk: 16 bytes of (offset, length) and the index's crc32c
    assert (d.array, d.problem, d.part) == ("reflectance", "corrupt", "index" if in_index else "data")
    assert (d.step, d.date[:10], d.tile) == (1, "2024-06-22", {"y": [240, 480], "x": [504, 756]})
    assert d.key == "reflectance/c/1/0/1/2"


@pytest.mark.parametrize("damage, problem, part", [
    ("delete", "missing", "shard"),
    ("truncate", "corrupt", "index"),  # the index is read from the end of what is left
    ("empty", "truncated", "shard"),
    ("short", "truncated", "shard"),
])
def test_lost_or_cut_shards_are_refused_before_a_read_and_found(cube, damage, problem, part):
    shard = _shard(cube, 0, 4, 4)  # the corner tile: 228 x 244 px of a 240 x 252 shard
    data = shard.read_bytes()
    if damage == "delete":
        shard.unlink()
    else:
        shard.write_bytes({"truncate": data[: len(data) // 2], "empty": b"", "short": data[:11]}[damage])
    if damage in ("delete", "empty"):  # zarr itself reads these back as NaN, without a word
        assert bool(open_cube(str(cube)).reflectance.isel(time=0, y=-1, x=-1).isnull().all())
    if damage != "truncate":  # found by one listing, no chunk read
        with pytest.raises(CorruptCubeError, match=r"reflectance 2024-06-12 y 960-1188, x 1008-1252"):
            check_present(CubeStore(str(cube)))
    [d] = verify(str(cube)).damage
    assert (d.array, d.problem, d.part, d.date[:10]) == ("reflectance", problem, part, "2024-06-12")
    assert d.tile == {"y": [960, 1188], "x": [1008, 1252]}


def test_repair_rewrites_exactly_the_damaged_chunks_and_gives_back_the_same_cube(reference, cube):
    before = _stamps(cube)
    damaged = {
        "reflectance/c/0/0/0/0": lambda p: p.unlink(),  # a deleted shard
        "reflectance/c/1/0/2/1": lambda p: _flip(p, 50),  # a flipped byte in the data
        "reflectance/c/1/0/3/3": lambda p: _flip(p, p.stat().st_size - 10),  # ... in the shard index
        "reflectance/c/0/0/4/4": lambda p: p.write_bytes(p.read_bytes()[:400]),  # a cut shard
        "clear/c/1/2/2": lambda p: p.unlink(),  # another variable's shard
        "clear_count/c/3/1": lambda p: _flip(p, 20),  # a layer along y, x only
        "time/c/0": lambda p: p.unlink(),  # a coordinate the template wrote
        "overviews/4/reflectance/c/1/0/0/0": lambda p: _flip(p, 30),  # an overview level
    }
    for key, spoil in damaged.items():
        spoil(cube / key)
    report = verify(str(cube))
    assert sorted(d.key for d in report.damage) == sorted(damaged)
    assert {d.key: d.date for d in report.damage if d.array == "reflectance"} == dict.fromkeys(
        ["reflectance/c/0/0/0/0", "reflectance/c/0/0/4/4", "reflectance/c/1/0/2/1", "reflectance/c/1/0/3/3"])
    assert {d.step for d in report.damage if d.array == "reflectance"} == {0, 1}  # the time coordinate is damaged

    fixed = repair(str(cube))
    assert fixed.ok and sorted(d.key for d in fixed.repaired) == sorted(damaged)
    assert _files(cube) == _files(reference)  # every chunk and every metadata document, byte for byte
    after = _stamps(cube)
    rewritten = {k for k in before if k in after and after[k] != before[k]} | (set(after) - set(before))
    overviews = {k for k in rewritten if k.startswith("overviews/")}
    # both dates' overviews are made again (each has a rewritten reflectance shard), and the root metadata is
    # consolidated again (the same bytes), nothing else
    assert rewritten - overviews - {"zarr.json"} == set(damaged) - {"overviews/4/reflectance/c/1/0/0/0"}
    assert {k.split("/")[4] for k in overviews if "/reflectance/c/" in k} == {"0", "1"}
    assert all("/reflectance/" in k or k.endswith("/time/c/0") for k in overviews)  # not their x, y, band
    assert not (cube / ".srcube").exists()


def test_repair_refuses_what_it_cannot_rewrite_as_it_was(cube, tmp_path):
    _shard(cube).unlink()
    group = zarr.open_group(str(cube), mode="r+")
    recorded = group.attrs["request"]
    group.attrs["request"] = "none (a model object in memory)"
    with pytest.raises(RepairError, match="records no request"):
        repair(str(cube))
    doc = json.loads(recorded)
    doc["options"]["min_clear"] = 0.9  # another request: another cube
    group.attrs["request"] = json.dumps(doc)
    with pytest.raises(RepairError, match="now makes another cube"):
        repair(str(cube))
    group.attrs["request"] = recorded
    group.attrs["appended"] = [{"dates": "2024-07-01/2024-07-10", "time_steps": 1}]
    with pytest.raises(RepairError, match="grown by 1 append"):
        repair(str(cube))
    del group.attrs["appended"]
    (cube / "clear" / "zarr.json").write_text("{")
    with pytest.raises(RepairError, match="metadata of clear"):
        repair(str(cube))
    assert not _shard(cube).exists()  # nothing was written
    group.attrs["complete"] = False
    with pytest.raises(IncompleteCubeError, match="run the same command again"):
        verify(str(cube))


def test_a_cube_without_checksums_is_not_verified_as_if_it_had_them(tmp_path):
    ds = xr.Dataset({"reflectance": (("time", "band", "y", "x"), np.ones((1, 1, 8, 8), np.float32))})
    ds.attrs["srcube_version"] = "0.old"
    store = CubeStore(str(tmp_path / "old.zarr"))
    dask.compute(store.write_template(ds.chunk({"y": 4, "x": 4}), {"reflectance": {"chunks": (1, 1, 4, 4)}}))
    store.finalize()
    with pytest.raises(UnverifiableCubeError, match="no crc32c checksums"):
        verify(store)
    check_present(store)  # old cubes may lack chunks by design: the read commands do not refuse them


@pytest.mark.slow  # ~19 s; verify and repair are covered on local cubes in the default run, and cubes in an object
# store by tests/pipeline/write/test_s3.py
def test_a_cube_in_an_object_store_is_verified_and_repaired(reference, s3_endpoint):
    import s3fs

    from tests.support.helpers import S3_CREDS

    so = {"key": S3_CREDS["AWS_ACCESS_KEY_ID"], "secret": S3_CREDS["AWS_SECRET_ACCESS_KEY"],
          "client_kwargs": {"endpoint_url": s3_endpoint, "region_name": S3_CREDS["AWS_REGION"]}}
    fs = s3fs.S3FileSystem(**so)
    fs.put(str(reference), "cubes/verify/cube.zarr", recursive=True)
    fs.rm_file("cubes/verify/cube.zarr/reflectance/c/1/0/0/1")
    data = bytearray(fs.cat_file("cubes/verify/cube.zarr/clear/c/0/1/1"))
    data[5] ^= 1
    fs.pipe_file("cubes/verify/cube.zarr/clear/c/0/1/1", bytes(data))
    url = "s3://cubes/verify/cube.zarr"
    with pytest.raises(CorruptCubeError, match="reflectance 2024-06-22 y 0-240, x 252-504: missing shard"):
        check_present(CubeStore(url, so))
    report = verify(url, so)
    assert sorted((d.key, d.problem, d.part) for d in report.damage) == [
        ("clear/c/0/1/1", "corrupt", "data"), ("reflectance/c/1/0/0/1", "missing", "shard")]
    assert repair(url, so).ok
    fs.invalidate_cache()
    stored = {k.removeprefix("cubes/verify/cube.zarr/"): fs.cat_file(k) for k in fs.find("cubes/verify/cube.zarr")}
    assert stored == _files(reference)
