"""The map's tiles on a real cube (``view_cube``: the sample's corner, 628 x 596 px, two dates): each tile is the
cube's window stretched as ``srcube quicklook`` stretches it, read from the level asked for and from the chunks of its
window only; the input view is the whole frame's derivation, cut; anything but a complete srcube cube is refused."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
import torch
import xarray as xr
import zarr
from PIL import Image

from srcube.models.interp import Interpolation
from srcube.pipeline.errors import CorruptCubeError, CubeAttributeError, IncompleteCubeError, NotACubeError
from srcube.pipeline.view.tiles import TILE, CubeView, TileRequestError, composite_rgba, png_rgba
from srcube.pipeline.write.quicklook import cube_quicklook
from srcube.pipeline.write.store import CubeStore

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def view(view_cube):
    return CubeView.open(str(view_cube))


def _rgba(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))


def test_png_rgba_is_a_png_any_reader_decodes():
    rgba = np.random.default_rng(0).integers(0, 256, (7, 5, 4), dtype=np.uint8)
    np.testing.assert_array_equal(_rgba(png_rgba(rgba)), rgba)


def test_levels_are_the_full_resolution_and_the_overviews(view, view_cube):
    assert (view.levels[1].height, view.levels[1].width) == (596, 628)
    assert sorted(view.levels) == [1, 4] and view.levels[4].group == "overviews/4"
    assert view.levels[1].tiles == (3, 3) and view.levels[4].tiles == (1, 1)
    info = view.info()
    assert info["dates"] == ["2024-06-12", "2024-06-22"] and info["epsg"] == 32631
    assert [c["id"] for c in info["composites"]] == ["true", "false"]
    assert [o["id"] for o in info["overlays"]] == ["clear", "consistency"]
    ds = CubeStore(str(view_cube)).open()
    a, _, c, _, e, f = info["transform"]  # pixel corners: the first centre is half a pixel in
    assert (c + a / 2, f + e / 2) == (float(ds.x[0]), float(ds.y[0])) and a == -e == 2.5
    assert info["input_view"]["exact"] is True and info["input_view"]["stored"] is False


@pytest.mark.parametrize("t", [0, 1])
def test_the_overview_tile_is_the_quicklook_of_the_date(view, view_cube, t):
    """The quicklook of this cube reads overview level 4 whole (157 x 149 px): the level's one tile is the same
    pixels (the quicklook paints no data black, the tile leaves it transparent)."""
    png = cube_quicklook(CubeStore(str(view_cube)), date=view.dates[t])
    ql = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    tile = _rgba(view.tile_png(4, 0, 0, t, "true"))
    assert tile.shape[:2] == ql.shape[:2] == (149, 157)
    data = tile[..., 3] == 255
    assert data.mean() > 0.5
    np.testing.assert_array_equal(tile[..., :3][data], ql[data])
    assert (ql[~data] == 0).all()


def test_a_full_resolution_tile_is_its_window_with_the_dates_stretch(view):
    lo, hi = view.stretch(1, "false")
    rgb = view.window(1, 1, ["B08", "B04", "B03"], 256, 512, 256, 512)
    np.testing.assert_array_equal(_rgba(view.tile_png(1, 1, 1, 1, "false")), composite_rgba(rgb, lo, hi))
    edge = _rgba(view.tile_png(1, 2, 2, 1, "false"))  # the last row and column of tiles are what is left
    assert edge.shape == (596 - 512, 628 - 512, 4)


def _chunks(view_cube, array: str, window: tuple[int, int, int, int], t: int) -> set[str]:
    """The keys of the stored chunks (shards) of ``array`` that hold rows r0:r1, columns c0:c1 of date ``t``."""
    arr = zarr.open_array(str(view_cube), path=array, mode="r")
    cy, cx = (arr.shards or arr.chunks)[-2:]
    r0, r1, c0, c1 = window
    lead = f"{t}/0" if arr.ndim == 4 else f"{t}"
    return {f"{array}/c/{lead}/{i}/{j}" for i in range(r0 // cy, (r1 - 1) // cy + 1)
            for j in range(c0 // cx, (c1 - 1) // cx + 1)}


@pytest.mark.parametrize(("level", "ty", "tx", "layer", "array", "window"), [
    (1, 1, 2, "true", "reflectance", (256, 512, 512, 628)),
    (1, 0, 0, "clear", "clear", (0, 256, 0, 256)),
    (4, 0, 0, "true", "overviews/4/reflectance", (0, 149, 0, 157)),
    (4, 0, 0, "consistency", "consistency", (0, 596, 0, 628)),  # no overviews: every 4th pixel of the whole frame
])
def test_a_tile_reads_the_chunks_of_its_window_and_nothing_else(view_cube, level, ty, tx, layer, array, window):
    view = CubeView.open(str(view_cube))  # its own tile cache: empty
    view.stretch(0, "true")  # the date's stretch reads the quicklook's frame once: not part of the tile
    view.counters.reset()
    view.tile_png(level, ty, tx, 0, layer)
    got = view.counters.to_json()
    assert set(got["keys_read"]) == _chunks(view_cube, array, window, 0)
    assert set(got["reads_by_array"]) == {array}
    assert got["tiles"] == got["tiles_rendered"] == 1 and got["tiles_by_level"] == {str(level): 1}
    view.tile_png(level, ty, tx, 0, layer)  # again: from the tile cache, nothing read
    again = view.counters.to_json()
    assert again["chunk_reads"] == got["chunk_reads"] and again["tiles"] == 2 and again["tiles_rendered"] == 1


def test_neighbouring_tiles_read_a_chunk_they_share_once(view_cube):
    view = CubeView.open(str(view_cube))
    view.stretch(1, "true")
    view.counters.reset()
    view.tile_png(1, 0, 0, 1, "true")
    view.tile_png(1, 0, 1, 1, "true")  # columns 256-512: the chunk of columns 212-424 is the first tile's too
    got = view.counters.to_json()
    first, second = (_chunks(view_cube, "reflectance", (0, 256, c0, c0 + 256), 1) for c0 in (0, 256))
    assert first & second and got["cache_hits"] >= len(first & second)
    assert set(got["keys_read"]) == first | second
    assert got["chunk_reads"] == len(first | second)  # each chunk from the store once


def test_the_input_view_of_a_tile_is_the_whole_frames_cut(view):
    """Degraded by the projection's operator and bicubic back up, tile by tile (with the reach as margin) or over
    the whole frame: the same values; and not the super-resolved ones (it is the input's view)."""
    bands = ["B04", "B03", "B02"]
    full = view.window(1, 1, bands, 0, 596, 0, 628)
    with torch.no_grad():
        x = torch.from_numpy(np.where(np.isfinite(full), full, 0.0).astype(np.float32))[None]
        whole = Interpolation("bicubic", view.scale).sr(view.projection.degrade(x))[0].numpy()
    whole[~np.isfinite(full)] = np.nan
    for r0, r1, c0, c1 in [(256, 512, 256, 512), (0, 256, 512, 628), (512, 596, 0, 256)]:
        tile = view.input_window(1, bands, r0, r1, c0, c1)
        np.testing.assert_allclose(tile, whole[:, r0:r1, c0:c1], atol=2e-6, equal_nan=True)
    sr = full[:, 256:512, 256:512]
    diff = np.nanmean(np.abs(view.input_window(1, bands, 256, 512, 256, 512) - sr))
    assert 1e-4 < diff < 0.1 * np.nanmean(sr)
    assert view.tile_png(1, 1, 1, 1, "true-input") != view.tile_png(1, 1, 1, 1, "true")
    # zoomed out, the two views are the same data (the overviews)
    assert view.tile_png(4, 0, 0, 1, "true-input") == view.tile_png(4, 0, 0, 1, "true")


def test_the_input_view_starts_from_the_input_itself_on_a_projected_cube(view, view_cube):
    """The operator gives back the input the cube was made from (its stack, kept in the stack cache): within the
    consistency layer's order of error (1e-5 reflectance), as the projection promises; within the operator's reach of
    the cube's outer edge, where the halo it was computed with is cut off, approximate (at most 0.016)."""
    stack = xr.open_zarr(next((view_cube.parent / "stacks").glob("stack-*.zarr")))
    halo, s, bands = int(stack.attrs["halo"]), view.scale, ["B04", "B03", "B02"]
    with torch.no_grad():
        sr = view.window(1, 1, bands, 0, 596, 0, 628)
        lr = view.projection.degrade(torch.from_numpy(np.nan_to_num(sr))[None])[0].numpy()
    given = stack.reflectance.sel(band=bands).isel(time=1).values[:, halo : halo + 596 // s, halo : halo + 628 // s]
    diff = np.abs(lr - given)
    inner = diff[:, 3:-3, 3:-3]
    layer = float(np.nanmean(CubeStore(str(view_cube)).open().consistency.isel(time=1).values))
    assert np.nanmean(inner) < 2 * layer and np.nanmax(inner) < 1e-3
    assert np.nanmean(diff) < 1e-4 and np.nanmax(diff) < 0.03
    assert np.nanmean(given) > 0.03  # (a reflectance, not zeros)


def test_overlays_paint_what_the_layers_say(view, view_cube):
    ds = CubeStore(str(view_cube)).open()
    clear = ds.clear.isel(time=1, y=slice(0, TILE), x=slice(0, TILE)).values
    assert 0 < (clear == 0).mean() < 1  # the date has clouds there
    np.testing.assert_array_equal(_rgba(view.tile_png(1, 0, 0, 1, "clear"))[..., 3] == 255, clear == 0)
    err = ds.consistency.isel(time=1, y=slice(0, TILE), x=slice(0, TILE)).values
    np.testing.assert_array_equal(_rgba(view.tile_png(1, 0, 0, 1, "consistency"))[..., 3] == 255, np.isfinite(err))


@pytest.mark.parametrize(("args", "status"), [
    ((1, 0, 0, 0, "ndvi"), 400), ((2, 0, 0, 0, "true"), 404), ((1, 3, 0, 0, "true"), 404),
    ((4, 0, 1, 0, "true"), 404), ((1, 0, 0, 2, "true"), 404),
])
def test_a_tile_the_cube_does_not_have_is_refused(view, args, status):
    with pytest.raises(TileRequestError) as info:
        view.tile_png(*args)
    assert info.value.status == status


def _copy(view_cube, tmp_path, name="copy.zarr"):
    out = tmp_path / name
    shutil.copytree(view_cube, out)
    return out


def _set_root_attrs(cube, **attrs):
    meta = cube / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"].update(attrs)
    meta.write_text(json.dumps(doc))


def test_anything_but_a_complete_srcube_cube_is_refused_before_serving(view_cube, tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing there"):
        CubeView.open(str(tmp_path / "absent.zarr"))
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(NotACubeError, match="an empty folder"):
        CubeView.open(str(tmp_path / "empty.zarr"))
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w").attrs["title"] = "not srcube's"
    with pytest.raises(NotACubeError, match="other data"):
        CubeView.open(str(tmp_path / "other.zarr"))
    unfinished = _copy(view_cube, tmp_path, "unfinished.zarr")
    _set_root_attrs(unfinished, complete=False)
    with pytest.raises(IncompleteCubeError, match="not complete"):
        CubeView.open(str(unfinished))
    lacking = _copy(view_cube, tmp_path, "lacking.zarr")
    shard = next(p for p in (lacking / "reflectance" / "c").rglob("*") if p.is_file())
    shard.unlink()
    with pytest.raises(CorruptCubeError, match="chunk"):
        CubeView.open(str(lacking))
    crafted = _copy(view_cube, tmp_path, "crafted.zarr")
    _set_root_attrs(crafted, scale="4; rm -rf /")
    with pytest.raises(CubeAttributeError, match="scale"):
        CubeView.open(str(crafted))
