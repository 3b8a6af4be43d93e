"""Tile arithmetic for pad-and-crop inference: pure functions, no I/O.

A tile is a chunk of the input grid. Each tile is read with ``margin`` extra input pixels on every
side that has a neighbour (none beyond the scene edge, where the model sees the same border as a
whole-image pass), super-resolved, and cropped back to ``scale x`` its own extent. With
``margin >= receptive_field`` the tiled result equals a whole-image pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def chunk_sizes(n: int, tile: int, min_size: int = 1) -> tuple[int, ...]:
    """Split ``n`` pixels into as few tiles of at most ``tile`` as there must be, of balanced size: all
    ``ceil(n / count)`` but a last one that may be smaller (a regular grid, so the tiles are zarr chunks).
    Balanced, the tasks of a small region take about as long as each other (1024 px in tiles of at most
    672: 512 + 512, not 672 + 352). A last tile smaller than ``min_size`` joins the one before it (a tile
    must be at least as large as the margin its neighbours borrow)."""
    if n <= 0:
        raise ValueError(f"cannot tile an axis of {n} pixels")
    if tile <= 0:
        raise ValueError(f"tile size must be positive, got {tile}")
    if min_size > tile:
        raise ValueError(f"min_size {min_size} exceeds the tile size {tile}")
    size = -(-n // -(-n // tile))
    if size < min_size:  # only where the margin is over half the tile: full tiles, a short rest merged
        size = tile
    sizes = [size] * (n // size)
    rest = n - size * len(sizes)
    if rest:
        if sizes and rest < min_size:
            sizes[-1] += rest
        else:
            sizes.append(rest)
    return tuple(sizes)


@dataclass(frozen=True)
class TileSpec:
    """Tile size (input pixels), margin (input pixels) and scale of a tiled inference, and the ``halo``:
    input pixels on each side of the array that are context only (read beyond the region so that its
    edge pixels see their real neighbours; held by the edge tiles and cropped from their output)."""

    tile: int
    margin: int
    scale: int
    halo: int = 0

    def __post_init__(self) -> None:
        if self.tile < 1:
            raise ValueError(f"tile must be >= 1, got {self.tile}")
        if self.margin < 0:
            raise ValueError(f"margin must be >= 0, got {self.margin}")
        if self.scale < 1:
            raise ValueError(f"scale must be >= 1, got {self.scale}")
        if self.margin > self.tile:
            raise ValueError(f"margin {self.margin} is larger than the tile {self.tile}; use larger tiles")
        if self.halo and self.halo < self.margin:
            raise ValueError(f"a halo of {self.halo} pixels is smaller than the margin {self.margin} tiles borrow")

    def chunks(self, n: int) -> tuple[int, ...]:
        """The tiles of an axis of ``n`` input pixels; with a halo, the first and last tiles also hold the
        halo's pixels (context for the region's edge, cropped from their output: no extra tasks)."""
        core = chunk_sizes(n - 2 * self.halo, self.tile, max(self.margin, 1)) if self._inside(n) else ()
        if not self.halo:
            return core
        if len(core) == 1:
            return (core[0] + 2 * self.halo,)
        return (core[0] + self.halo, *core[1:-1], core[-1] + self.halo)

    def out_chunks(self, n: int) -> tuple[int, ...]:
        """The output chunks of an axis of ``n`` input pixels: the region's tiles, ``scale`` x."""
        core = chunk_sizes(n - 2 * self.halo, self.tile, max(self.margin, 1)) if self._inside(n) else ()
        return tuple(c * self.scale for c in core)

    def _inside(self, n: int) -> bool:
        if n <= 2 * self.halo:
            raise ValueError(f"an axis of {n} pixels has nothing inside its halo of {self.halo} on each side")
        return True

    def overhead(self) -> float:
        """Input pixels processed per useful pixel for interior tiles: ((T + 2m) / T)^2."""
        return ((self.tile + 2 * self.margin) / self.tile) ** 2


def choose_tile(tile: int | None, margin: int, default: int = 256, max_overhead: float = 1.15,
                largest: int = 2048) -> int:
    """The tile size to use: ``tile`` if given, else the smallest multiple of 16 (at least
    ``default``, at most ``largest``) whose borrowed border costs at most ``max_overhead``:
    ((T + 2m) / T)^2 <= max_overhead, i.e. T >= 2m / (sqrt(max_overhead) - 1)."""
    if tile is not None:
        return int(tile)
    t = max(default, math.ceil(2 * margin / (math.sqrt(max_overhead) - 1)))
    return min(-(-t // 16) * 16, largest)


def crop_bounds(index: int, count: int, margin: int, halo: int = 0) -> tuple[int, int]:
    """(before, after) pixels around tile ``index`` of ``count`` that are not its own: ``margin``
    borrowed from a neighbour, or at the array's edges the ``halo`` it holds (zero without one)."""
    before = margin if index > 0 else halo
    after = margin if index < count - 1 else halo
    return before, after
