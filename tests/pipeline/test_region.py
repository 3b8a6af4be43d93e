"""End to end: the real local STAC API -> odc-stac -> LocalCluster -> zarr v3 cube."""

import json
import socket

import numpy as np
import pytest
import rioxarray  # noqa: F401
import torch
import xarray as xr

from srcube import models
from srcube.pipeline import run_region
from srcube.pipeline.assemble.stack import assemble, region_only, with_clearance
from srcube.pipeline.errors import (
    AllCloudyError,
    EmptySearchError,
    InvalidBBoxError,
    InvalidDatesError,
    InvalidOptionError,
    NotACubeError,
    OutputExistsError,
    UnknownBandError,
    UnknownCatalogError,
    UnknownCollectionError,
    UnknownModelError,
    UnsupportedScaleError,
)
from srcube.pipeline.params import BBox, DateRange
from srcube.pipeline.search import catalog as cat
from srcube.pipeline.sensors import SENTINEL2
from srcube.pipeline.testing import sample

pytestmark = pytest.mark.integration

BBOX = sample.DEFAULT_BBOX
DATES = sample.DEFAULT_DATES


@pytest.fixture(scope="module")
def cube(sample_url, dask_client, tmp_path_factory):
    out = tmp_path_factory.mktemp("cubes") / "sample.zarr"
    ds = run_region(BBOX, DATES, out=str(out), client=dask_client, tile=128, model="bicubic")
    return out, ds


def test_cube_layout(cube):
    _, ds = cube
    assert ds.reflectance.dims == ("time", "band", "y", "x")
    assert ds.reflectance.dtype == np.float32
    assert ds.clear.dims == ("time", "y", "x") and ds.clear.dtype == np.uint8
    assert list(ds.band.values) == ["B02", "B03", "B04", "B08"]
    assert ds.sizes["time"] == 4  # 2 of 6 solar days dropped as too cloudy
    # SR tile = zarr shard: the 297 input rows in three balanced tiles of at most 128 (99, x4), every band of a
    # date's tile in one shard (one write task, one writer); inside it chunks of every band and at most 1024 px
    # a side, which are what readers get as Dask chunks
    assert ds.sizes["y"] == 4 * 297
    assert ds.reflectance.encoding["shards"] == (1, 4, 396, 4 * 105)
    assert ds.reflectance.encoding["chunks"] == (1, 4, 396, 420) and ds.reflectance.chunks[2] == (396,) * 3
    assert ds.clear.encoding["shards"] == (1, 396, 420) and ds.clear_count.encoding["chunks"] == (396, 420)
    assert ds.attrs["complete"] is True


def test_one_shard_object_per_write_task_and_inner_chunks_divide_it(cube):
    from srcube.pipeline.write.cube import inner_chunk

    out, _ = cube
    keys = sorted(p.relative_to(out / "reflectance" / "c").parts for p in (out / "reflectance" / "c").rglob("*")
                  if p.is_file())
    # (time, band, y, x) shard keys: every band in one object per date and tile, 4 dates x 3 x 3 tiles
    assert len(keys) == 4 * 3 * 3 and {k[1] for k in keys} == {"0"}
    assert [inner_chunk(n) for n in (396, 1024, 2688, 2052, 4096, 2062)] == [396, 1024, 896, 684, 1024, 2062]


def test_bit_rounding_keeps_the_stated_mantissa_bits_and_compresses_better(cube, tmp_path):
    out, ds = cube
    rounded_out = tmp_path / "rounded.zarr"
    rounded = run_region(BBOX, DATES, out=str(rounded_out), tile=128, model="bicubic", keepbits=7)
    assert rounded.attrs["bitround_keepbits"] == 7 == rounded.reflectance.attrs["bitround_keepbits"]
    assert "bit-rounded to 7 mantissa bits" in rounded.attrs["codec"]
    a, b = ds.reflectance.values, rounded.reflectance.values
    assert np.array_equal(np.isnan(a), np.isnan(b))
    ok = np.isfinite(a) & (a != 0)
    assert np.all(np.abs(b[ok] - a[ok]) <= np.abs(a[ok]) * 2.0**-8)  # round to nearest on 7 of 23 bits
    assert np.all(b[ok].view(np.uint32) & np.uint32(2**16 - 1) == 0)  # the 16 dropped bits are zero
    assert rounded.attrs["request_hash"] != ds.attrs["request_hash"]

    def size(path):
        return sum(p.stat().st_size for p in (path / "reflectance").rglob("*") if p.is_file())

    assert size(rounded_out) < 0.8 * size(out)
    with pytest.raises(InvalidOptionError, match="keepbits rounds float32 mantissas"):
        run_region(BBOX, DATES, out=str(tmp_path / "x.zarr"), model="bicubic", keepbits=7, dtype="int16")
    with pytest.raises(InvalidOptionError, match="keepbits"):
        run_region(BBOX, DATES, out=str(tmp_path / "x.zarr"), model="bicubic", keepbits=24)


def test_cube_follows_cf_conventions_and_states_its_codec(cube):
    import zarr

    out, ds = cube
    for name, var in ds.data_vars.items():
        if {"y", "x"} <= set(var.dims):  # CF readers follow grid_mapping to the CRS
            assert var.attrs["grid_mapping"] == "spatial_ref", name
        assert "long_name" in var.attrs, name
    assert ds.reflectance.attrs["standard_name"] == "surface_bidirectional_reflectance"
    assert ds.reflectance.attrs["units"] == "1" and ds.time.attrs["standard_name"] == "time"
    # a CF reader that decodes every coordinate attribute finds the grid mapping and its CRS
    cf = xr.open_zarr(out, decode_coords="all")
    assert "spatial_ref" in cf.reflectance.coords and cf.reflectance.rio.crs == ds.odc.crs
    # every array is Blosc zstd level 5 with bit shuffle, then each chunk's crc32c, as the cube says
    store = zarr.open_group(str(out), mode="r")
    for name in ("reflectance", "clear", "clear_count"):
        blosc, crc = store[name].compressors  # inside the sharding codec
        assert (blosc.cname.value, blosc.clevel, blosc.shuffle.value) == ("zstd", 5, "bitshuffle"), name
        assert type(crc).__name__ == "Crc32cCodec", name
    assert ds.attrs["codec"] == "blosc zstd level 5, bitshuffle, crc32c per chunk"


def test_complete_cube_has_a_valid_stac_collection_and_item_that_open_it(cube):
    import json

    import pystac
    from pystac.extensions.datacube import DatacubeExtension
    from pystac.extensions.projection import ProjectionExtension

    from srcube.pipeline.write.stac import validate

    out, ds = cube
    folder = out.parent / f"{out.name}.stac"
    item_path = next(p for p in folder.glob("*.json") if p.name != "collection.json")
    for path in (folder / "collection.json", item_path):
        validate(json.loads(path.read_text()))  # STAC core schemas, offline
    broken = json.loads(item_path.read_text())
    del broken["geometry"]
    with pytest.raises(pystac.errors.STACValidationError):
        validate(broken)
    collection = pystac.Collection.from_file(str(folder / "collection.json"))
    item = next(iter(collection.get_items()))
    assert item.collection_id == collection.id and item.properties["srcube:request_hash"] == ds.attrs["request_hash"]
    assert ProjectionExtension.ext(item).code == ds.attrs["crs"] and ProjectionExtension.ext(item).shape == [
        ds.sizes["y"], ds.sizes["x"]]
    cube_ext = DatacubeExtension.ext(item)
    assert cube_ext.dimensions["band"].values == list(ds.band.values)
    assert cube_ext.dimensions["time"].to_dict()["values"][0].startswith(str(ds.time.values[0])[:19])
    assert {"reflectance", "clear", "clear_count"} <= set(cube_ext.variables)
    assert item.properties["processing:software"] == {"srcube": ds.attrs["srcube_version"]}
    # the Item alone opens the cube
    asset = item.assets["zarr"]
    opened = xr.open_dataset(asset.href, **asset.extra_fields["xarray:open_kwargs"])
    assert opened.reflectance.shape == ds.reflectance.shape and opened.reflectance.rio.crs == ds.odc.crs


def test_cube_georeferencing(cube):
    out, _ = cube
    ds = xr.open_zarr(out)  # plain xarray, no srcube
    assert ds.rio.crs.to_epsg() == 32631
    assert ds.reflectance.rio.crs.to_epsg() == 32631
    assert ds.rio.resolution() == (2.5, -2.5)
    # each 10 m input pixel maps to exactly 4 x 4 output pixels: output edges on the 10 m grid
    left, bottom, right, top = ds.rio.bounds()
    for edge in (left, bottom, right, top):
        assert edge % 10 == pytest.approx(0, abs=1e-6) or edge % 10 == pytest.approx(10, abs=1e-6)
    assert (right - left) / 2.5 == ds.sizes["x"]


def test_cube_provenance_attrs(cube):
    _, ds = cube
    a = ds.attrs
    assert a["srcube_version"] and a["model"] == "bicubic" and a["scale"] == 4
    assert a["weights_sha256"] == "none" and a["model_kind"] == "interpolation"
    assert a["resolution"] == 2.5 and a["input_resolution"] == 10.0
    assert len(a["stac_item_ids"]) == 8 and a["stac_items_found"] == 12
    assert a["created"].endswith("+00:00") and a["catalog"] == "sample"
    frames = json.loads(a["frames"])
    assert [f["kept"] for f in frames] == [True, False, True, False, True, True]
    assert all("too cloudy" in f["reason"] for f in frames if not f["kept"])
    assert np.allclose(ds.clear_fraction.values, [f["clear_fraction"] for f in frames if f["kept"]])


def test_cube_values_are_the_model_applied_to_the_stack(cube, sample_url):
    """The cube is the model over the stack read with its halo (the bbox's real neighbours), cropped to the
    bbox; the clear layer is the bbox's LR clear mask, each pixel repeated 4 x 4."""
    _, ds = cube
    halo = ds.attrs["halo_pixels"]
    assert halo >= models.build("bicubic", scale=4).receptive_field
    client = cat.open_catalog(cat.resolve_catalog("sample"))
    items = cat.search(client, "sentinel-2-l2a", BBox(*BBOX), DateRange.parse(DATES))
    stack = with_clearance(assemble(items, BBox(*BBOX), ["B02", "B03", "B04", "B08"], halo=halo), SENTINEL2)
    stack = stack.isel(time=[0, 2, 4, 5])
    lr = stack.reflectance.isel(time=2).values  # 2024-06-12
    with torch.inference_mode():
        ref = models.build("bicubic", scale=4)(torch.from_numpy(lr[None]))[0].numpy()
    h = 4 * halo
    np.testing.assert_allclose(ds.reflectance.isel(time=2).values, ref[:, h:-h, h:-h], atol=1e-5)
    clear_lr = stack.clear.isel(time=0).isel(region_only(stack)).values.astype(np.uint8)
    np.testing.assert_array_equal(ds.clear.isel(time=0).values, clear_lr.repeat(4, 0).repeat(4, 1))


def test_int16_encoding(sample_url, dask_client, tmp_path):
    out = tmp_path / "i16.zarr"
    ds = run_region(BBOX, "2024-06-12", out=str(out), client=dask_client, dtype="int16", bands=["B04"], scale=2)
    raw = xr.open_zarr(out, mask_and_scale=False)
    assert raw.reflectance.dtype == np.int16 and raw.reflectance.attrs["scale_factor"] == pytest.approx(1e-4)
    fill = raw.reflectance.attrs.get("_FillValue", raw.reflectance.encoding.get("_FillValue"))
    assert fill is not None and np.int16(fill) == fill  # no data has an int16 code, declared CF-style
    packed, decoded = raw.reflectance.values, ds.reflectance.values
    assert np.isnan(decoded[packed == fill]).all() and not np.isnan(decoded[packed != fill]).any()
    assert ds.reflectance.dtype == np.float32
    assert 0.0 < float(ds.reflectance.mean()) < 0.3


def test_complete_cube_needs_overwrite(cube, dask_client):
    out, _ = cube
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        run_region(BBOX, DATES, out=str(out), client=dask_client)


# --- bad input: a typed error and nothing written ----------------------------------------


def _dead_catalog_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"bbox": (51.427, 4.465, 51.401, 4.509)}, InvalidBBoxError, "min_lon"),
        ({"bbox": (4.465, 51.401, 4.509, 95.0)}, InvalidBBoxError, r"outside \[-90, 90\]"),
        ({"bbox": (4.465, 51.401, 4.465, 51.427)}, InvalidBBoxError, "zero width"),
        ({"dates": "2024-06-30/2024-05-01"}, InvalidDatesError, "reversed"),
        ({"dates": "May 2024"}, InvalidDatesError, "YYYY-MM-DD"),
        ({"catalog": "earthsearch"}, UnknownCatalogError, "unknown catalog 'earthsearch'"),
        ({"bands": ["B02", "B99"]}, UnknownBandError, "'B99'"),
        ({"model": "esrgan-9000"}, UnknownModelError, "esrgan-9000"),
        ({"scale": 32}, UnsupportedScaleError, "supports scales"),
        ({"min_clear": 1.5}, InvalidOptionError, "min_clear"),
        ({"tiles": 128}, InvalidOptionError, "unknown option"),
    ],
)
def test_bad_input_fails_before_any_work(tmp_path, kwargs, error, match):
    out = tmp_path / "never.zarr"
    args = {"bbox": BBOX, "dates": DATES, "catalog": _dead_catalog_url(), **kwargs}
    with pytest.raises(error, match=match):
        run_region(args.pop("bbox"), args.pop("dates"), out=str(out), **args)
    assert not out.exists()


def test_unknown_collection(sample_url, tmp_path):
    out = tmp_path / "never.zarr"
    with pytest.raises(UnknownCollectionError, match="'sentinel-1-grd' not found"):
        run_region(BBOX, DATES, collection="sentinel-1-grd", out=str(out))
    assert not out.exists()


def test_empty_search(sample_url, tmp_path):
    out = tmp_path / "never.zarr"
    with pytest.raises(EmptySearchError, match="widen the dates"):
        run_region(BBOX, "2023-01-01/2023-01-31", out=str(out))
    assert not out.exists()


def test_every_frame_cloudy(sample_url, dask_client, tmp_path):
    out = tmp_path / "never.zarr"
    with pytest.raises(AllCloudyError, match=r"2024-05-13T10:56:21 2\d\.\d%"):
        run_region(BBOX, "2024-05-13", out=str(out), client=dask_client)
    assert not out.exists()


def test_foreign_output_is_never_touched(sample_url, tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "thesis.pdf").write_bytes(b"%PDF")
    with pytest.raises(NotACubeError, match="not an srcube cube"):
        run_region(BBOX, DATES, out=str(out))
    assert [p.name for p in out.iterdir()] == ["thesis.pdf"]
