"""Parsing and validation of the region request: bounding box, date range, names, region size."""

from __future__ import annotations

import datetime as dt
import math
import numbers
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

from srcube.pipeline.errors import InvalidBBoxError, InvalidDatesError, RegionTooLargeError, SrcubeError

BBoxLike = Union["BBox", str, Sequence[float]]
DatesLike = Union["DateRange", str, Sequence[str | dt.date | dt.datetime]]

# UTM is defined from 80 deg S to 84 deg N; the output grid is always UTM.
UTM_MIN_LAT, UTM_MAX_LAT = -80.0, 84.0
METRES_PER_DEG_LON, METRES_PER_DEG_LAT = 111_320.0, 110_574.0  # at the equator (WGS84)


@dataclass(frozen=True)
class BBox:
    """A lon/lat bounding box in EPSG:4326: (min_lon, min_lat, max_lon, max_lat)."""

    min_lon: float
    min_lat: float
    max_lon: float
    max_lat: float

    def __post_init__(self) -> None:
        values = (self.min_lon, self.min_lat, self.max_lon, self.max_lat)
        if not all(isinstance(v, numbers.Real) for v in values):
            raise InvalidBBoxError(f"bbox {values!r} must be four numbers (min_lon, min_lat, max_lon, max_lat); "
                                   "use BBox.parse for strings")
        if not all(math.isfinite(v) for v in values):
            raise InvalidBBoxError(f"bbox {values} has a non-finite value; give four finite numbers")
        for name, v in (("min_lon", self.min_lon), ("max_lon", self.max_lon)):
            if not -180.0 <= v <= 180.0:
                raise InvalidBBoxError(f"bbox {name}={v} is outside [-180, 180]; is the order "
                                       "(min_lon, min_lat, max_lon, max_lat)?")
        for name, v in (("min_lat", self.min_lat), ("max_lat", self.max_lat)):
            if not -90.0 <= v <= 90.0:
                raise InvalidBBoxError(f"bbox {name}={v} is outside [-90, 90]; is the order "
                                       "(min_lon, min_lat, max_lon, max_lat)?")
        if self.min_lon > self.max_lon and self.min_lon > 0 > self.max_lon:
            raise InvalidBBoxError(
                f"bbox min_lon={self.min_lon} > max_lon={self.max_lon}: the box crosses the antimeridian, which "
                f"srcube does not support; split it into two boxes, ({self.min_lon}, {self.min_lat}, 180, "
                f"{self.max_lat}) and (-180, {self.min_lat}, {self.max_lon}, {self.max_lat}), or fix the order "
                "(min_lon, min_lat, max_lon, max_lat)")
        if self.min_lon > self.max_lon:
            raise InvalidBBoxError(
                f"bbox min_lon={self.min_lon} > max_lon={self.max_lon}: either the order is wrong "
                "(expected min_lon, min_lat, max_lon, max_lat) or the box crosses the antimeridian, "
                "which srcube does not support; split it into two boxes")
        if self.min_lat > self.max_lat:
            raise InvalidBBoxError(f"bbox min_lat={self.min_lat} > max_lat={self.max_lat}; expected "
                                   "(min_lon, min_lat, max_lon, max_lat)")
        if self.min_lon == self.max_lon or self.min_lat == self.max_lat:
            raise InvalidBBoxError(f"bbox {values} has zero width or height; give a box with min_lon < max_lon "
                                   "and min_lat < max_lat")
        if self.min_lat < UTM_MIN_LAT or self.max_lat > UTM_MAX_LAT:
            raise InvalidBBoxError(
                f"bbox latitudes [{self.min_lat}, {self.max_lat}] leave the UTM range "
                f"[{UTM_MIN_LAT}, {UTM_MAX_LAT}] that srcube grids use; keep the box within those latitudes")

    @classmethod
    def parse(cls, value: BBoxLike) -> BBox:
        """Accept a BBox, a sequence of four numbers, or a string ``"a,b,c,d"``."""
        if isinstance(value, BBox):
            return value
        if isinstance(value, str):
            parts: Sequence[object] = [p for p in re.split(r"[,\s]+", value.strip()) if p]
        elif isinstance(value, Sequence):
            parts = list(value)
        elif hasattr(value, "tolist") and hasattr(value, "ndim") and value.ndim == 1:  # numpy: total_bounds
            parts = list(value.tolist())
        else:
            raise InvalidBBoxError(f"bbox must be four numbers (min_lon, min_lat, max_lon, max_lat), "
                                   f"got {type(value).__name__}")
        if len(parts) != 4:
            raise InvalidBBoxError(f"bbox needs 4 numbers (min_lon, min_lat, max_lon, max_lat), "
                                   f"got {len(parts)}: {value!r}")
        try:
            nums = [float(p) for p in parts]  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise InvalidBBoxError(f"bbox values must be numbers, got {value!r}") from None
        except OverflowError:
            raise InvalidBBoxError(f"bbox {value!r} has a non-finite value (too large for a float); "
                                   "give four finite numbers") from None
        return cls(*nums)

    @property
    def center(self) -> tuple[float, float]:
        return ((self.min_lon + self.max_lon) / 2, (self.min_lat + self.max_lat) / 2)

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.min_lon, self.min_lat, self.max_lon, self.max_lat)

    def size_m(self) -> tuple[float, float]:
        """Approximate (width, height) in metres: the width at the latitude nearest the equator."""
        nearest = 0.0 if self.min_lat <= 0.0 <= self.max_lat else min(abs(self.min_lat), abs(self.max_lat))
        width = (self.max_lon - self.min_lon) * METRES_PER_DEG_LON * math.cos(math.radians(nearest))
        return width, (self.max_lat - self.min_lat) * METRES_PER_DEG_LAT


_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_RELATIVE_RE = re.compile(r"^(?:last|past) (?:(\d+) )?(days?|weeks?)$")


def _parse_day(value: object, which: str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str) and _DATE_RE.match(value.strip()):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError as exc:
            raise InvalidDatesError(f"{which} date {value!r} is not a calendar date ({exc}); give an existing "
                                    "day as YYYY-MM-DD") from None
    raise InvalidDatesError(f"{which} date {value!r} is not a date; use YYYY-MM-DD")


@dataclass(frozen=True)
class DateRange:
    """An inclusive range of UTC days."""

    start: dt.date
    end: dt.date

    def __post_init__(self) -> None:
        for which in ("start", "end"):
            day = getattr(self, which)
            if isinstance(day, dt.datetime):
                object.__setattr__(self, which, day.date())
            elif not isinstance(day, dt.date):
                raise InvalidDatesError(f"{which} {day!r} is not a date; use DateRange.parse for strings "
                                        "('YYYY-MM-DD/YYYY-MM-DD')")
        if self.start > self.end:
            raise InvalidDatesError(f"dates are reversed: start {self.start} is after end {self.end}; give "
                                    f"'{self.end}/{self.start}' (start first, both inclusive)")
        today = dt.datetime.now(dt.UTC).date()
        if self.start > today:
            raise InvalidDatesError(f"the whole range {self.start}/{self.end} is in the future "
                                    f"(today is {today}); no acquisitions can exist yet: give dates up to today")

    @classmethod
    def parse(cls, value: DatesLike, *, today: dt.date | None = None) -> DateRange:
        """Accept ``"YYYY-MM-DD/YYYY-MM-DD"``, a single ``"YYYY-MM-DD"``, a pair of dates, or a
        window relative to ``today`` (default: the UTC date now): ``"last 30 days"``, ``"last 2
        weeks"``, ``"today"``, ``"yesterday"``. ``"last N days"`` is the N days ending with today
        (inclusive), so scheduled runs give overlapping windows that catch late ingestions."""
        if isinstance(value, DateRange):
            return value
        if isinstance(value, str) and not value.strip()[:1].isdigit():
            return cls.relative(value, today=today)
        if isinstance(value, str):
            parts = value.split("/")
            if len(parts) == 1:
                day = _parse_day(parts[0], "the")
                return cls(day, day)
            if len(parts) != 2:
                raise InvalidDatesError(f"dates {value!r} must be 'YYYY-MM-DD/YYYY-MM-DD'")
            return cls(_parse_day(parts[0], "start"), _parse_day(parts[1], "end"))
        if isinstance(value, Sequence) and len(value) == 2:
            return cls(_parse_day(value[0], "start"), _parse_day(value[1], "end"))
        raise InvalidDatesError(f"dates {value!r} must be 'YYYY-MM-DD/YYYY-MM-DD' or a (start, end) pair")

    @classmethod
    def relative(cls, spec: str, *, today: dt.date | None = None) -> DateRange:
        """The range a relative window (``"last 30 days"``, ``"yesterday"``, ...) means on ``today``."""
        ref = today or dt.datetime.now(dt.UTC).date()
        text = " ".join(spec.lower().replace("_", " ").split())
        if text == "today":
            return cls(ref, ref)
        if text == "yesterday":
            return cls(ref - dt.timedelta(days=1), ref - dt.timedelta(days=1))
        m = _RELATIVE_RE.match(text)
        if not m:
            raise InvalidDatesError(f"dates {spec!r} are neither 'YYYY-MM-DD/YYYY-MM-DD' nor a relative window "
                                    "('last N days', 'last N weeks', 'today', 'yesterday')")
        n = int(m.group(1) or 1)
        if n < 1 or n > 36600:
            raise InvalidDatesError(f"dates {spec!r}: N must be between 1 and 36600")
        days = n * (7 if m.group(2).startswith("week") else 1)
        return cls(ref - dt.timedelta(days=days - 1), ref)

    def to_stac(self) -> str:
        """The STAC API datetime interval covering the whole days."""
        return f"{self.start.isoformat()}T00:00:00Z/{self.end.isoformat()}T23:59:59.999999Z"

    def __str__(self) -> str:
        return f"{self.start.isoformat()}/{self.end.isoformat()}"


# --- names -----------------------------------------------------------------------------------

#: collection, band and model names: no path separators, no "..", no whitespace or control characters
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,199}")


def safe_name(value: object, what: str, error: type[SrcubeError]) -> str:
    """``value`` if it is a plain name (letters, digits, ``. _ : + -``, no ``..``), else ``error``.

    Names end up in URLs, asset keys and file names; a name with ``/`` or ``..`` could reach
    another place than meant (path traversal), so it is refused before any work."""
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value) or ".." in value:
        raise error(f"{what} {value!r} is not a valid name: use letters, digits and '.', '_', ':', '+', '-' "
                    "(no '/', '..', spaces; at most 200 characters)")
    return value


# --- region size -----------------------------------------------------------------------------


def output_shape(region: BBox, resolution_m: float, scale: int) -> tuple[int, int]:
    """Approximate (ny, nx) of the output grid: the region at ``resolution_m`` input pixels, x ``scale``."""
    width, height = region.size_m()
    return (math.ceil(height / resolution_m) * scale, math.ceil(width / resolution_m) * scale)


def check_region_size(region: BBox, resolution_m: float, scale: int, *, n_bands: int, bytes_per_value: int,
                      max_pixels: float | None, yes: bool) -> tuple[int, int]:
    """The estimated output (ny, nx); RegionTooLargeError when ``ny * nx > max_pixels`` without ``yes``.

    Estimated from the bbox, the input resolution and the scale alone (before any search)."""
    ny, nx = output_shape(region, resolution_m, scale)
    pixels = ny * nx
    if max_pixels is not None and pixels > max_pixels and not yes:
        gb = pixels * n_bands * bytes_per_value / 1e9
        raise RegionTooLargeError(
            f"region {region.as_tuple()} is too large: about {nx:,} x {ny:,} = {pixels:.3g} output pixels per band "
            f"and date ({resolution_m:g} m input pixels x{scale}), about {gb:,.1f} GB per date for {n_bands} "
            f"band(s), above max_pixels={max_pixels:.3g}. Pass yes=True (CLI: --yes) to run it anyway, raise "
            "max_pixels, or split the bbox into smaller regions")
    return ny, nx
