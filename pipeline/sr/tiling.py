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
    """Split ``n`` pixels into tiles of ``tile``; a last tile smaller than ``min_size`` joins the
    one before it (a tile must be at least as large as the margin its neighbours borrow)."""
    if n <= 0:
        raise ValueError(f"cannot tile an axis of {n} pixels")
    if tile <= 0:
        raise ValueError(f"tile size must be positive, got {tile}")
    if min_size > tile:
        raise ValueError(f"min_size {min_size} exceeds the tile size {tile}")
    sizes = [tile] * (n // tile)
    rest = n - tile * len(sizes)
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
    edge pixels see their real neighbours; one chunk each, dropped from the output)."""

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
        """The tiles of an axis of ``n`` input pixels (with the halo: one chunk of it at each end)."""
        if not self.halo:
            return chunk_sizes(n, self.tile, max(self.margin, 1))
        if n <= 2 * self.halo:
            raise ValueError(f"an axis of {n} pixels has nothing inside its halo of {self.halo} on each side")
        return (self.halo, *chunk_sizes(n - 2 * self.halo, self.tile, max(self.margin, 1)), self.halo)

    def out_chunks(self, n: int) -> tuple[int, ...]:
        return tuple(c * self.scale for c in self.chunks(n))

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


def crop_bounds(index: int, count: int, margin: int) -> tuple[int, int]:
    """(before, after) margins present around tile ``index`` of ``count`` of ``size`` pixels:
    zero at the scene edges, ``margin`` elsewhere."""
    before = margin if index > 0 else 0
    after = margin if index < count - 1 else 0
    return before, after
