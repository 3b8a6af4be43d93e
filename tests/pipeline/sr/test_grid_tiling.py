import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from srcube.pipeline.assemble.grid import GridSpec, utm_epsg
from srcube.pipeline.params import BBox
from srcube.pipeline.sr.tiling import TileSpec, chunk_sizes, crop_bounds


@pytest.mark.parametrize(
    ("lon", "lat", "epsg"),
    [(4.48, 51.41, 32631), (-11.4, 25.1, 32629), (151.2, -33.9, 32756), (-180.0, 0.0, 32601), (180.0, 10.0, 32660)],
)
def test_utm_zone_of_centre(lon, lat, epsg):
    assert utm_epsg(lon, lat) == epsg


def test_grid_aligned_to_source_origin():
    # the 29RKH tile origin is not a multiple of 100 m: the grid must follow the file
    spec = GridSpec.aligned_to(32629, 100.0, (199980.0, 2800020.0))
    gb = spec.geobox(BBox(-11.5, 25.0, -11.3, 25.2))
    assert (gb.affine.c - 199980.0) % 100.0 == pytest.approx(0.0, abs=1e-6)
    assert (2800020.0 - gb.affine.f) % 100.0 == pytest.approx(0.0, abs=1e-6)
    assert gb.crs.epsg == 32629 and gb.resolution.x == 100.0


@given(x0=st.integers(0, 10**6), y0=st.integers(0, 10**7), res=st.sampled_from([10.0, 20.0, 60.0, 100.0]))
def test_grid_alignment_property(x0, y0, res):
    spec = GridSpec.aligned_to(32631, res, (float(x0), float(y0)))
    gb = spec.geobox(BBox(4.44, 51.39, 4.52, 51.44))
    for edge, origin in ((gb.affine.c, x0), (gb.affine.f, y0)):
        off = (edge - origin) / res
        assert abs(off - round(off)) < 1e-6


def test_grid_rejects_bad_specs():
    with pytest.raises(ValueError, match="resolution"):
        GridSpec(32631, 0.0)
    with pytest.raises(ValueError, match="anchor"):
        GridSpec(32631, 10.0, (1.0, 0.0))


@given(n=st.integers(1, 5000), tile=st.integers(1, 600), min_size=st.integers(1, 50))
def test_chunk_sizes_properties(n, tile, min_size):
    if min_size > tile:
        with pytest.raises(ValueError, match="exceeds the tile"):
            chunk_sizes(n, tile, min_size)
        return
    sizes = chunk_sizes(n, tile, min_size)
    assert sum(sizes) == n
    assert len(set(sizes[:-1])) <= 1  # a regular grid (but for the last tile)
    assert sizes[0] <= tile or sizes == (n,)  # no larger than asked, or one tile with a short rest merged
    assert len(sizes) <= -(-n // tile)  # no more tiles than there must be
    assert len(sizes) == 1 or sizes[-1] >= min_size
    assert sizes[-1] < sizes[0] + min_size  # the last is at most a short rest larger
    if len(sizes) == -(-n // tile) and sizes[-1] <= sizes[0]:  # balanced: no tile is a short rest
        assert sizes[0] == -(-n // len(sizes))


def test_chunk_sizes_rejects_nonsense():
    with pytest.raises(ValueError):
        chunk_sizes(0, 10)
    with pytest.raises(ValueError):
        chunk_sizes(10, 0)


def test_tile_spec():
    spec = TileSpec(tile=256, margin=2, scale=4)
    assert spec.chunks(600) == (200, 200, 200)  # three tiles of at most 256, balanced
    assert spec.out_chunks(600) == (800, 800, 800)
    assert spec.chunks(1030) == (206,) * 5 and TileSpec(672, 24, 4).chunks(1024) == (512, 512)
    assert spec.overhead() == pytest.approx((260 / 256) ** 2)
    assert crop_bounds(0, 3, 2) == (0, 2) and crop_bounds(1, 3, 2) == (2, 2) and crop_bounds(2, 3, 2) == (2, 0)
    assert crop_bounds(0, 1, 5) == (0, 0)
    with pytest.raises(ValueError, match="larger than the tile"):
        TileSpec(tile=8, margin=9, scale=2)
    assert np.prod(spec.chunks(256)) == 256


@given(margin=st.integers(0, 400))
def test_default_tile_keeps_the_border_overhead_low(margin):
    from srcube.pipeline.sr.tiling import choose_tile

    t = choose_tile(None, margin)
    assert t % 16 == 0 and 256 <= t <= 2048 and t >= margin
    if t < 2048:
        assert TileSpec(t, margin, 2).overhead() <= 1.15
    assert choose_tile(100, margin) == 100
