"""One run as data: :class:`RunRequest`, frozen and JSON-serialisable. ``run_region`` makes one from its
arguments; the Prefect flow makes one from its parameters and passes it between tasks, each of which plans
its job from it (:meth:`srcube.pipeline.region.RegionJob.prepare`)."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from srcube.pipeline.cells import Cell, CellBBox
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
    cell: str | None = None  # a cell of the area grid (pipeline.cells): the grid is its square; bbox its lon/lat bbox
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
        cell = region.cell if isinstance(region, CellBBox) else None
        days = DateRange.parse(dates, today=today)
        if options is not None and not isinstance(options, (Mapping, RunOptions)):
            raise InvalidOptionError(f"options must be a dict of run_region options, got {options!r}")
        opts = options if isinstance(options, RunOptions) else RunOptions.from_kwargs(dict(options or {}))
        if isinstance(bands, str):
            bands = [bands]
        if isinstance(out, os.PathLike):
            out = os.fspath(out)
        return cls(bbox=region.as_tuple(), dates=str(days), cell=cell, catalog=catalog, collection=collection,
                   bands=tuple(bands) if bands is not None else None, model=model, scale=scale, out=out,
                   options=opts)

    def region(self) -> BBox:
        """The region to run over: the cell's (its grid is the cell's square) or the bbox."""
        return Cell.parse(self.cell).region() if self.cell is not None else BBox.parse(self.bbox)

    def to_json(self) -> dict[str, Any]:
        """The request as plain JSON (options: only those set)."""
        doc = self.model_dump(mode="json", exclude={"options"})
        doc["options"] = self.options.given()
        return doc

    def recorded(self) -> dict[str, Any] | None:
        """The request as a cube records it (attribute ``request``), for ``srcube verify --repair`` to run it again
        over damaged chunks: without its output (the cube may have moved), its credentials (storage options) and
        how the run was asked to write (mode, overwrite, progress, lock wait); None when the model is an object in
        memory (nothing to run again)."""
        if not isinstance(self.model, (str, os.PathLike)):
            return None
        doc = self.model_dump(mode="json", exclude={"options", "model", "out"})
        doc["model"] = os.fspath(self.model)
        doc["options"] = {k: v for k, v in self.options.given().items() if k not in _NOT_RECORDED}
        return doc

    @classmethod
    def from_recorded(cls, doc: Mapping[str, Any], *, out: str,
                      storage_options: Mapping[str, Any] | None = None) -> RunRequest:
        """The request a cube recorded (:meth:`recorded`), writing to ``out`` with ``storage_options``."""
        options = {**dict(doc.get("options") or {}), "mode": "write"}
        if storage_options:
            options["storage_options"] = dict(storage_options)
        return cls(**{**{k: v for k, v in doc.items() if k != "options"}, "out": out,
                      "options": RunOptions.from_kwargs(options)})


#: options a cube does not record with its request: credentials, how that run was asked to write, and the stack
#: cache (a repair reads the catalog again rather than write wherever a shared cube's attributes say)
_NOT_RECORDED = ("storage_options", "mode", "overwrite", "progress", "lock_wait", "stack_cache", "refresh_cache")
