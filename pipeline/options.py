"""The run options: one pydantic model holds every option of ``run_region`` with its type, default,
constraints and help text. The ``srcube run`` options (:mod:`srcube.cli`) and the Prefect flow's parameter
schema (:mod:`srcube.flows.region`) are generated from it, so they cannot drift from what a run accepts.

Values are validated strictly (no ``"3"`` for an integer, no ``1`` for ``True``); any rejected value raises
:class:`~srcube.pipeline.errors.InvalidOptionError` naming the option, the value and what it must be.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from srcube.pipeline.errors import InvalidOptionError

#: how asset pixels may be read (see :mod:`srcube.pipeline.search.access`)
AccessKind = Literal["none", "planetary-computer", "terrascope", "cdse", "bearer", "s3-keys"]

#: words for the type errors of each annotation
_TYPE_WORDS = {"float": "a number", "int": "an integer", "bool": "True or False", "str": "a string",
               "dict": "a dict", "tuple": "a list of integer QA classes"}


def _opt(default: Any, help: str, expect: str | None = None, **constraints: Any) -> Any:
    """A field: its default, its help text (CLI ``--help``, flow schema), the phrase that says what a valid
    value is (error messages), and pydantic constraints."""
    extra: dict[str, Any] | None = {"expect": expect} if expect else None
    return Field(default, description=help, json_schema_extra=extra, **constraints)


def _plain(value: Any) -> Any:
    """A numpy scalar as its Python value, anything else as it is. numpy is not imported for it (the command line
    builds its options from this module): a numpy scalar exists only where numpy was imported already."""
    numpy = sys.modules.get("numpy")
    return value.item() if numpy is not None and isinstance(value, numpy.generic) else value


class RunOptions(BaseModel):
    """Options of :func:`srcube.run_region` beyond the main arguments (all keyword, all validated)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False,
                              use_attribute_docstrings=False)

    # --- frames and clearance -------------------------------------------------------------------
    min_clear: float = _opt(0.5, "drop frames with a smaller clear fraction", "a fraction in [0, 1]", ge=0, le=1)
    clear_classes: tuple[int, ...] | None = _opt(
        None, "QA classes counted as clear, e.g. 4,5,6,11 (default: the sensor's)")
    sensor: str | None = _opt(None, "override the sensor the collection implies (sentinel-2, proba-v)")
    harmonize: Literal["auto", "baseline", "raster", "none"] | None = _opt(
        None, "Sentinel-2 reflectance offset: auto (the catalog's rule checked against each item's pixels; "
              "default), baseline (ESA's rule from the processing baseline), raster (raster:bands), none")
    auth: AccessKind | None = _opt(None, "how asset pixels are read (default: the catalog's)")
    # --- multi-frame composites -----------------------------------------------------------------
    window: str | None = _opt(None, "multi-frame composite window, e.g. 30D (default: one for the whole range)")
    n_views: int | None = _opt(None, "views per window (multi-frame; default: the model's)", ">= 1", ge=1)
    min_views: int = _opt(1, "windows with fewer usable frames are padded or dropped (short_windows)",
                          ">= 1", ge=1)
    short_windows: Literal["pad", "drop"] = _opt("pad", "pad (masked empty views) or drop windows below "
                                                        "min_views")
    register_views: bool = _opt(True, "register each window's views to its clearest view before fusion (sub-pixel "
                                      "phase correlation, one shift per view; the cube's reflectance records them)")
    # --- search ---------------------------------------------------------------------------------
    max_cloud_cover: float | None = _opt(None, "skip items above this eo:cloud_cover percentage",
                                         "a percentage in [0, 100]", ge=0, le=100)
    max_items: int | None = _opt(None, "at most this many items from the search", ">= 1", ge=1)
    asset_check: Literal["blocks", "none"] = _opt(
        "blocks", "screen the found items' assets first (blocks) or not (none)")
    fail_on_error: bool = _opt(False, "fail on unusable assets instead of leaving their items out")
    catalog_retries: int = _opt(5, "retries of each catalog request (errors, timeouts, 429/5xx)", ">= 0", ge=0)
    catalog_timeout: float = _opt(30.0, "seconds each attempt of a catalog request may take, from connecting to "
                                        "the last byte of the answer", "a positive number of seconds", gt=0)
    network_timeout: float = _opt(
        60.0, "seconds every other network request may take to connect, and to answer (asset reads through GDAL, "
              "token requests, an s3:// output or stack cache where storage_options set no timeouts)",
        "a positive number of seconds", gt=0)
    # --- the grid and the stack -----------------------------------------------------------------
    resolution: float | None = _opt(None, "input grid resolution in grid units (default: the bands' finest "
                                          "native)", "a positive number of grid units", gt=0)
    sharpen: str = _opt("auto", "Sentinel-2 20 m bands on the 10 m grid: auto (the shipped learned sharpener "
                                "if it qualifies, else hpf), bilinear (plain resampling), hpf, or sharpener "
                                "weights (path or shipped name)")
    georef_check: Literal["first", "all", "none"] = _opt(
        "first", "check the assets' georeferencing on the first item, on all, or not at all")
    stack_cache: str | None = _opt(None, "folder of cached stacks (path or fsspec URL)")
    refresh_cache: bool = _opt(False, "rebuild the cached stack even if it exists")
    # --- super-resolution -----------------------------------------------------------------------
    tile: int | None = _opt(None, "input tile size in pixels (default 256, larger for deep models)",
                            "an integer >= 16", ge=16)
    precision: Literal["fp32", "bf16", "fp16"] = _opt("fp32", "model precision (bf16/fp16: autocast on CUDA)")
    engine: Literal["torch", "onnx"] = _opt(
        "torch", "what runs a single-image model: torch, or its exported ONNX graph in onnxruntime (the onnx extra; "
                 "exported once into $SRCUBE_ONNX_CACHE; the torch result within 1e-4; fp32)")
    boundary: Literal["none", "reflect", "edge"] = _opt("none", "scene-edge handling of the model")
    frames_per_task: int = _opt(1, "frames (or composite windows) per SR task", ">= 1", ge=1)
    pass_tile: int | None = _opt(None, "input pixels per side of one forward pass's tile (default per device: "
                                       "small on a CPU, large on a GPU)", "an integer >= 16", ge=16)
    batch: int | None = _opt(None, "frames x tiles per forward pass (default: 1 on a CPU, from the free "
                                   "memory on a GPU)", ">= 1", ge=1)
    consistency: bool | None = _opt(
        None, "project each SR tile so the sensor PSF degradation gives back the input, and write the "
              "consistency layer (default: on for learned single-image models, off otherwise)")
    allow_untrained: bool = _opt(False, "accept weights whose metadata says trained = false")
    gpu: bool | None = _opt(None, "run SR tasks only on workers declaring a GPU resource (default: if any "
                                  "does)")
    torch_threads: int | None = _opt(None, "torch threads per task (default: the worker host's cores)", ">= 1",
                                     ge=1)
    # --- the cluster ----------------------------------------------------------------------------
    n_workers: int | None = _opt(None, "worker processes of the local cluster (> 1 implies processes)",
                                 ">= 1", ge=1)
    processes: bool | None = _opt(None, "local cluster of worker processes instead of threads in this process")
    progress: bool = _opt(False, "text progress bars for the long steps")
    # --- the output -----------------------------------------------------------------------------
    dtype: Literal["float32", "int16"] = _opt("float32", "float32, or int16 (CF scale_factor 1e-4)")
    keepbits: int | None = _opt(
        None, "bit-round float32 reflectance to this many mantissa bits (lossy: relative error <= 2^-(keepbits+1); "
              "the cube compresses better and says keepbits in its attributes)", "an integer from 1 to 23", ge=1, le=23)
    overwrite: bool = _opt(False, "replace a complete cube at the output")
    mode: Literal["write", "append"] = _opt(
        "write", "write a new cube, or append: add the request's new dates to the complete cube at the output "
                 "(same grid, bands, model and scale; dates it has are skipped)")
    max_pixels: float | None = _opt(1e9, "refuse outputs above this many pixels per band and date without yes",
                                    "a positive number (or None for no limit)", gt=0)
    yes: bool = _opt(False, "run a region above max_pixels anyway")
    storage_options: dict[str, Any] | None = _opt(None, "fsspec options for the output and the stack cache")
    lock_wait: float = _opt(0.0, "seconds to wait for another run writing the same output",
                            ">= 0 seconds", ge=0)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise InvalidOptionError(describe(exc)) from None

    # --- conversions before the strict checks ---------------------------------------------------

    @model_validator(mode="before")
    @classmethod
    def _plain_values(cls, data: Any) -> Any:
        """numpy scalars as Python values, paths as strings, mappings as dicts, QA class lists as tuples."""
        if not isinstance(data, Mapping):
            return data
        out = {k: _plain(v) for k, v in data.items()}
        if isinstance(out.get("stack_cache"), os.PathLike):
            out["stack_cache"] = os.fspath(out["stack_cache"])
        so = out.get("storage_options")
        if isinstance(so, Mapping) and not isinstance(so, dict):
            out["storage_options"] = dict(so)
        classes = out.get("clear_classes")
        if isinstance(classes, Iterable) and not isinstance(classes, (str, bytes, Mapping)):
            out["clear_classes"] = tuple(_plain(v) for v in classes)
        return out

    @field_validator("window")
    @classmethod
    def _window(cls, v: str | None) -> str | None:
        from srcube.pipeline.assemble.clearance import parse_window

        parse_window(v)  # ValueError says which lengths work
        return v

    @field_validator("sharpen")
    @classmethod
    def _sharpen(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("sharpen must be 'auto', 'bilinear', a sharpener name ('hpf') or the path of "
                             "sharpener weights, got an empty string")
        return v

    @model_validator(mode="after")
    def _views(self) -> RunOptions:
        if self.n_views is not None and self.min_views > self.n_views:
            raise ValueError(f"need 1 <= min_views <= n_views, got {self.min_views} and {self.n_views}")
        if self.keepbits is not None and self.dtype != "float32":
            raise ValueError(f"keepbits rounds float32 mantissas; dtype {self.dtype!r} has none (drop one of them)")
        if self.engine == "onnx" and self.precision != "fp32":
            raise ValueError(f"engine 'onnx' runs the exported float32 graph; precision {self.precision!r} is for "
                             "torch: use precision 'fp32' or engine 'torch'")
        return self

    # --- construction ----------------------------------------------------------------------------

    @classmethod
    def from_kwargs(cls, options: Mapping[str, Any]) -> RunOptions:
        """The options of a call's keyword arguments (unknown names are refused with the known ones)."""
        unknown = sorted(set(options) - set(cls.model_fields))
        if unknown:
            raise InvalidOptionError(f"unknown option(s) {unknown}; run_region accepts {sorted(cls.model_fields)}")
        return cls(**options)

    def store_options(self, url: str) -> dict[str, Any] | None:
        """``storage_options`` for the store at ``url`` with ``network_timeout`` as its connect and read timeouts
        where the options set none (see :func:`srcube.pipeline.network.store_options`)."""
        from srcube.pipeline.network import store_options

        return store_options(url, self.storage_options, self.network_timeout)

    def given(self) -> dict[str, Any]:
        """The options set explicitly (JSON-able): what a flow passes on and a cube records."""
        return self.model_dump(exclude_unset=True, mode="json")


def expectation(name: str) -> str:
    """What a valid value of option ``name`` is, in words."""
    f = RunOptions.model_fields[name]
    extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
    return str(extra.get("expect", ""))


def choices(name: str) -> tuple[str, ...] | None:
    """The allowed values of a choice option (a Literal), else None."""
    from typing import get_args, get_origin

    ann = RunOptions.model_fields[name].annotation
    for part in (ann, *get_args(ann)):
        if get_origin(part) is Literal:
            return tuple(str(a) for a in get_args(part))
    return None


def _type_word(name: str, error_type: str) -> str:
    f = RunOptions.model_fields[name]
    text = str(f.annotation)
    nullable = " or None" if "None" in text else ""
    for key, word in (("tuple", _TYPE_WORDS["tuple"]), ("dict", _TYPE_WORDS["dict"]), ("bool", "True or False"),
                      ("float", "a number"), ("int", "an integer"), ("str", "a string")):
        if key in text:
            return word + nullable
    return error_type


def describe(exc: ValidationError) -> str:
    """One sentence per rejected option: ``option NAME must be WHAT, got VALUE (TYPE)``."""
    parts = []
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ())]
        name = loc[0] if loc else ""
        value = err.get("input")
        kind = err.get("type", "")
        got = f"got {value!r}" + (f" ({type(value).__name__})" if not isinstance(value, (int, float)) or
                                  isinstance(value, bool) else "")
        if kind == "value_error":
            msg = str(err.get("ctx", {}).get("error", err.get("msg", "")))
            parts.append(msg)
            continue
        if name not in RunOptions.model_fields:
            parts.append(f"{err.get('msg')}: {name!r}")
            continue
        if kind == "literal_error":
            allowed = choices(name) or ()
            what = (" or ".join(repr(a) for a in allowed) if len(allowed) <= 2 else
                    "one of " + ", ".join(repr(a) for a in allowed))
        elif kind == "finite_number":
            expect = expectation(name)
            what = expect if "number" in expect else "a number"
        elif kind.endswith("_type") or kind in ("int_from_float", "tuple_type", "dict_type"):
            what = _type_word(name, kind)
            if len(loc) > 1:  # an element of a list option
                got = f"got {value!r} in {name}"
        else:  # constraints: ge, le, gt, lt ...
            what = expectation(name) or str(err.get("msg", ""))
        if isinstance(value, float) and math.isnan(value):
            got = "got nan"
        parts.append(f"option {name} must be {what}, {got}")
    return "; ".join(parts)
