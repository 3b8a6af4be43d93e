"""Parsing and validation of the region request: bounding box and date range."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

from pipeline.errors import InvalidBBoxError, InvalidDatesError

BBoxLike = Union["BBox", str, Sequence[float]]
DatesLike = Union["DateRange", str, Sequence[str | dt.date | dt.datetime]]

# UTM is defined from 80 deg S to 84 deg N; the output grid is always UTM.
UTM_MIN_LAT, UTM_MAX_LAT = -80.0, 84.0


@dataclass(frozen=True)
class BBox:
    """A lon/lat bounding box in EPSG:4326: (min_lon, min_lat, max_lon, max_lat)."""

    min_lon: float
    min_lat: float
    max_lon: float
    max_lat: float

    def __post_init__(self) -> None:
        values = (self.min_lon, self.min_lat, self.max_lon, self.max_lat)
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
        if self.min_lon > self.max_lon:
            raise InvalidBBoxError(
                f"bbox min_lon={self.min_lon} > max_lon={self.max_lon}: either the order is wrong "
                "(expected min_lon, min_lat, max_lon, max_lat) or the box crosses the antimeridian, "
                "which srcube does not support; split it into two boxes")
        if self.min_lat > self.max_lat:
            raise InvalidBBoxError(f"bbox min_lat={self.min_lat} > max_lat={self.max_lat}; expected "
                                   "(min_lon, min_lat, max_lon, max_lat)")
        if self.min_lon == self.max_lon or self.min_lat == self.max_lat:
            raise InvalidBBoxError(f"bbox {values} has zero width or height")
        if self.min_lat < UTM_MIN_LAT or self.max_lat > UTM_MAX_LAT:
            raise InvalidBBoxError(
                f"bbox latitudes [{self.min_lat}, {self.max_lat}] leave the UTM range "
                f"[{UTM_MIN_LAT}, {UTM_MAX_LAT}] that srcube grids use")

    @classmethod
    def parse(cls, value: BBoxLike) -> BBox:
        """Accept a BBox, a sequence of four numbers, or a string ``"a,b,c,d"``."""
        if isinstance(value, BBox):
            return value
        if isinstance(value, str):
            parts: Sequence[object] = [p for p in re.split(r"[,\s]+", value.strip()) if p]
        elif isinstance(value, Sequence):
            parts = list(value)
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
        return cls(*nums)

    @property
    def center(self) -> tuple[float, float]:
        return ((self.min_lon + self.max_lon) / 2, (self.min_lat + self.max_lat) / 2)

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.min_lon, self.min_lat, self.max_lon, self.max_lat)


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
            raise InvalidDatesError(f"{which} date {value!r} is not a calendar date: {exc}") from None
    raise InvalidDatesError(f"{which} date {value!r} is not a date; use YYYY-MM-DD")


@dataclass(frozen=True)
class DateRange:
    """An inclusive range of UTC days."""

    start: dt.date
    end: dt.date

    def __post_init__(self) -> None:
        if self.start > self.end:
            raise InvalidDatesError(f"dates are reversed: start {self.start} is after end {self.end}")
        today = dt.datetime.now(dt.UTC).date()
        if self.start > today:
            raise InvalidDatesError(f"the whole range {self.start}/{self.end} is in the future "
                                    f"(today is {today}); no acquisitions can exist yet")

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
