"""One run as data: :class:`RunRequest`, frozen and JSON-serialisable. ``run_region`` makes one from its
arguments; the Prefect flow makes one from its parameters and passes it between tasks, each of which plans
its job from it (:meth:`srcube.pipeline.region.RegionJob.prepare`)."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from srcube.pipeline.errors import InvalidOptionError
from srcube.pipeline.options import RunOptions
from srcube.pipeline.params import BBox, BBoxLike, DateRange, DatesLike


class RunRequest(BaseModel):
    """What to make: region, dates, catalog and collection, bands, model and scale, output and options.

    ``bbox`` and ``dates`` are normalised (a concrete ``YYYY-MM-DD/YYYY-MM-DD`` range, relative dates
    resolved). ``model`` is a name or weights path (JSON-serialisable), or, for in-memory use only, a model
    object."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    bbox: tuple[float, float, float, float]
    dates: str
    catalog: Any = "sample"  # checked by RegionJob.prepare, as every field below (srcube's typed errors)
    collection: Any = None
    bands: tuple[Any, ...] | None = None
    model: Any = "auto"
    scale: Any = None  # checked by RegionJob.prepare (an integer such as 2, 3 or 4)
    out: Any = "srcube.zarr"  # checked by RegionJob.prepare (a path or URL)
    options: RunOptions = RunOptions()

    @classmethod
    def make(cls, bbox: BBoxLike, dates: DatesLike, *, catalog: str = "sample", collection: str | None = None,
             bands: Sequence[str] | str | None = None, model: Any = "auto", scale: Any = None,
             out: Any = "srcube.zarr", options: Mapping[str, Any] | RunOptions | None = None,
             today: dt.date | None = None) -> RunRequest:
        """The request of a call's arguments, with srcube's typed errors for what is wrong in them."""
        region = BBox.parse(bbox)
        days = DateRange.parse(dates, today=today)
        if options is not None and not isinstance(options, (Mapping, RunOptions)):
            raise InvalidOptionError(f"options must be a dict of run_region options, got {options!r}")
        opts = options if isinstance(options, RunOptions) else RunOptions.from_kwargs(dict(options or {}))
        if isinstance(bands, str):
            bands = [bands]
        if isinstance(out, os.PathLike):
            out = os.fspath(out)
        return cls(bbox=region.as_tuple(), dates=str(days), catalog=catalog, collection=collection,
                   bands=tuple(bands) if bands is not None else None, model=model, scale=scale, out=out,
                   options=opts)

    def to_json(self) -> dict[str, Any]:
        """The request as plain JSON (options: only those set)."""
        doc = self.model_dump(mode="json", exclude={"options"})
        doc["options"] = self.options.given()
        return doc
