"""Bad input table (issue #8 item 6): every case gives a typed error with a message that names the bad
value and says what to do, and writes nothing -- through the Python API (``run_region``), the CLI
(``srcube run``) and the flow's parameter builder (``flows.region.build_request``).

Errors must come before any cluster starts or any search runs: a stub replaces the LocalCluster
and opening a catalog fails the test, except for the one case that needs the catalog (an unknown
collection, asked of the local sample STAC API). Property-based fuzzing of the bbox and date
parsers closes the file.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from rich.console import Console
from typer.testing import CliRunner

import srcube.cli.commands as cli
from srcube import models
from srcube.pipeline import errors, run_region, super_resolve
from srcube.pipeline import region as region_mod
from srcube.pipeline.options import RunOptions
from srcube.pipeline.options import choices as option_choices
from srcube.pipeline.params import BBox, DateRange, check_region_size, output_shape, safe_name
from srcube.pipeline.search import catalog as cat
from srcube.pipeline.testing import sample
from tests.support.helpers import S3_CREDS

BBOX = sample.DEFAULT_BBOX
DATES = sample.DEFAULT_DATES
TMP, WEIGHTS = "@TMP@", "@W@"  # placeholders for the case's tmp_path and the weights folder
runner = CliRunner()


# --- the table -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    kwargs: dict[str, Any]  # run_region arguments that differ from a good request
    error: type[errors.SrcubeError]
    match: str  # names the bad value
    hint: str  # says what to do
    cli: bool = True  # expressible as `srcube run` options
    api: bool = True
    flow: bool = True
    catalog: bool = False  # needs the (local sample) catalog: found by the search, after the arguments
    setup: Callable[[Path], None] | None = field(default=None, compare=False)


def _file_in_the_way(tmp: Path) -> None:
    (tmp / "notes.txt").write_text("not a folder")


def _foreign_folder(tmp: Path) -> None:
    (tmp / "results").mkdir()
    (tmp / "results" / "thesis.pdf").write_bytes(b"%PDF-1.7")


def _complete_cube(tmp: Path) -> None:
    (tmp / "done.zarr").mkdir()
    doc = {"zarr_format": 3, "node_type": "group", "attributes": {"srcube_version": "0.1", "complete": True}}
    (tmp / "done.zarr" / "zarr.json").write_text(json.dumps(doc))


def _read_only_folder(tmp: Path) -> None:
    (tmp / "ro").mkdir()
    (tmp / "ro").chmod(0o555)


NAN, INF = float("nan"), float("inf")
CASES: dict[str, Case] = {
    # bounding box
    "bbox-lon-reversed": Case({"bbox": (4.509, 51.401, 4.465, 51.427)}, errors.InvalidBBoxError,
                              r"min_lon=4\.509 > max_lon=4\.465", r"order is wrong"),
    "bbox-lat-lon-swapped": Case({"bbox": (51.427, 4.465, 51.401, 4.509)}, errors.InvalidBBoxError,
                                 r"min_lon=51\.427 > max_lon=51\.401", r"expected min_lon, min_lat, max_lon, max_lat"),
    "bbox-lat-reversed": Case({"bbox": (4.465, 51.427, 4.509, 51.401)}, errors.InvalidBBoxError,
                              r"min_lat=51\.427 > max_lat=51\.401", r"expected \(min_lon, min_lat, max_lon, max_lat\)"),
    "bbox-lon-out-of-range": Case({"bbox": (190, 51.4, 191, 51.5)}, errors.InvalidBBoxError,
                                  r"min_lon=190(\.0)? is outside \[-180, 180\]", r"is the order"),
    "bbox-lat-out-of-range": Case({"bbox": (4.4, -95, 4.5, 51.5)}, errors.InvalidBBoxError,
                                  r"min_lat=-95(\.0)? is outside \[-90, 90\]", r"is the order"),
    "bbox-beyond-utm": Case({"bbox": (4.4, 84.5, 4.5, 85.0)}, errors.InvalidBBoxError,
                            r"latitudes \[84\.5, 85\.0\] leave the UTM range", r"keep the box within"),
    "bbox-nan": Case({"bbox": (4.4, NAN, 4.5, 51.5)}, errors.InvalidBBoxError, r"\(4\.4, nan, 4\.5, 51\.5\)",
                     r"give four finite numbers"),
    "bbox-inf": Case({"bbox": (4.4, 51.4, INF, 51.5)}, errors.InvalidBBoxError, r"\(4\.4, 51\.4, inf, 51\.5\)",
                     r"give four finite numbers"),
    "bbox-too-large-for-a-float": Case({"bbox": (10**400, 51.4, 4.5, 51.5)}, errors.InvalidBBoxError,
                                       r"non-finite", r"give four finite numbers"),
    "bbox-zero-area": Case({"bbox": (4.465, 51.401, 4.465, 51.427)}, errors.InvalidBBoxError,
                           r"\(4\.465, 51\.401, 4\.465, 51\.427\) has zero width", r"min_lon < max_lon"),
    "bbox-antimeridian": Case({"bbox": (179.5, -17.0, -179.5, -16.0)}, errors.InvalidBBoxError,
                              r"min_lon=179\.5 > max_lon=-179\.5: the box crosses the antimeridian",
                              r"split it into two boxes, \(179\.5, -17\.0, 180, -16\.0\) and \(-180, -17\.0, -179\.5"),
    "bbox-three-numbers": Case({"bbox": (4.4, 51.4, 4.5)}, errors.InvalidBBoxError, r"got 3: .*4\.4, ?51\.4, ?4\.5",
                               r"needs 4 numbers \(min_lon, min_lat, max_lon, max_lat\)"),
    "bbox-words": Case({"bbox": "west,south,east,north"}, errors.InvalidBBoxError, r"'west,south,east,north'",
                       r"must be numbers"),
    "bbox-empty": Case({"bbox": ""}, errors.InvalidBBoxError, r"got 0: ''", r"needs 4 numbers"),
    # dates
    "dates-reversed": Case({"dates": "2024-06-30/2024-05-01"}, errors.InvalidDatesError,
                           r"start 2024-06-30 is after end 2024-05-01", r"give '2024-05-01/2024-06-30'"),
    "dates-malformed": Case({"dates": "May 2024"}, errors.InvalidDatesError, r"'May 2024'", r"YYYY-MM-DD/YYYY-MM-DD"),
    "dates-impossible-day": Case({"dates": "2023-02-30/2023-03-05"}, errors.InvalidDatesError,
                                 r"'2023-02-30' is not a calendar date", r"give an existing day as YYYY-MM-DD"),
    "dates-slashed-day": Case({"dates": "2024/05/01"}, errors.InvalidDatesError, r"'2024/05/01'",
                              r"must be 'YYYY-MM-DD/YYYY-MM-DD'"),
    "dates-in-the-future": Case({"dates": "2999-01-01/2999-02-01"}, errors.InvalidDatesError,
                                r"2999-01-01/2999-02-01 is in the future", r"give dates up to today"),
    "dates-empty": Case({"dates": ""}, errors.InvalidDatesError, r"dates '' are neither", r"'last N days'"),
    "dates-open-end": Case({"dates": "2024-05-01/"}, errors.InvalidDatesError, r"end date ''", r"use YYYY-MM-DD"),
    "dates-next-days": Case({"dates": "next 3 days"}, errors.InvalidDatesError, r"'next 3 days'",
                            r"'last N days', 'last N weeks', 'today', 'yesterday'"),
    # catalog, collection, bands
    "catalog-unknown": Case({"catalog": "earthsearch"}, errors.UnknownCatalogError, r"unknown catalog 'earthsearch'",
                            r"use one of .*earth-search"),
    "catalog-not-http": Case({"catalog": "ftp://example.com/stac"}, errors.UnknownCatalogError,
                             r"'ftp://example.com/stac'", r"a STAC API URL \(http:// or https://\)"),
    "collection-unknown": Case({"collection": "sentinel-1-grd"}, errors.UnknownCollectionError,
                               r"collection 'sentinel-1-grd' not found", r"it has: .*sentinel-2-l2a", catalog=True),
    "collection-traversal": Case({"collection": "../../collections"}, errors.UnknownCollectionError,
                                 r"collection '\.\./\.\./collections' is not a valid name", r"no '/', '\.\.'"),
    "band-unknown": Case({"bands": ["B02", "B99"]}, errors.UnknownBandError, r"'B99'", r"known bands: B01, B02"),
    "band-quality": Case({"bands": ["B04", "SCL"]}, errors.UnknownBandError, r"SCL is a quality band",
                         r"Ask for reflectance bands"),
    "band-traversal": Case({"bands": ["../../B04"]}, errors.UnknownBandError,
                           r"band '\.\./\.\./B04' is not a valid name", r"use letters, digits"),
    "band-twice": Case({"bands": ["B04", "B04"]}, errors.InvalidOptionError, r"name 'B04' twice",
                       r"ask for each band once"),
    "band-with-newline": Case({"bands": ["B04\n"]}, errors.UnknownBandError, r"band 'B04\\n' is not a valid name",
                              r"use letters, digits"),
    # models and weights
    "model-unknown": Case({"model": "esrgan-9000"}, errors.UnknownModelError, r"unknown model 'esrgan-9000'",
                          r"known models: .*bicubic"),
    "model-traversal": Case({"model": "../../etc/passwd"}, errors.UnknownModelError,
                            r"model '\.\./\.\./etc/passwd' is neither a model name", r"use one of .*bicubic"),
    "model-empty": Case({"model": ""}, errors.UnknownModelError, r"model '' is neither", r"use one of"),
    "model-without-weights": Case({"model": "esrgan"}, errors.WeightsNotFoundError,
                                  r"'esrgan' is an architecture with no trained weights", r"pass a weights file"),
    "scale-unsupported": Case({"scale": 12}, errors.UnsupportedScaleError, r"not 12", r"supports scales \[2, 3"),
    "scale-one": Case({"scale": 1}, errors.UnsupportedScaleError, r"not 1$", r"supports scales \[2, 3"),
    "scale-not-an-integer": Case({"scale": "4x"}, errors.InvalidOptionError, r"got '4x'", r"must be an integer",
                                 cli=False),
    "weights-missing": Case({"model": f"{WEIGHTS}/nope.safetensors"}, errors.WeightsNotFoundError,
                            r"nope\.(json|safetensors) does not exist", r"never downloads"),
    "weights-not-safetensors": Case({"model": f"{WEIGHTS}/garbage.safetensors"}, errors.IncompatibleWeightsError,
                                    r"garbage\.safetensors is not a readable safetensors file",
                                    r"export the weights with models\.save_weights"),
    "weights-torch-checkpoint": Case({"model": f"{WEIGHTS}/model.pt"}, errors.IncompatibleWeightsError,
                                     r"model\.pt is not srcube weights", r"convert the checkpoint"),
    "weights-sha-mismatch": Case({"model": f"{WEIGHTS}/corrupt.safetensors"}, errors.WeightsIntegrityError,
                                 r"corrupt\.safetensors has sha256", r"corrupt or was replaced"),
    "weights-other-bands": Case({"model": f"{WEIGHTS}/b48.safetensors", "bands": ["B02", "B03"]},
                                errors.IncompatibleWeightsError,
                                r"trained for bands \['B04', 'B08'\] \(in that order\), not \['B02', 'B03'\]",
                                r"in that order"),
    "weights-other-scale": Case({"model": f"{WEIGHTS}/b48.safetensors", "bands": ["B04", "B08"], "scale": 2},
                                errors.IncompatibleWeightsError, r"'b48' super-resolve x4, not x2", r"x4"),
    "weights-untrained": Case({"model": f"{WEIGHTS}/random.safetensors"}, errors.UntrainedWeightsError,
                              r"weights 'random' are marked untrained", r"allow_untrained=True"),
    # band sharpening of the 20 m bands
    "sharpen-not-a-sharpener": Case({"sharpen": "bicubic"}, errors.InvalidOptionError,
                                    r"sharpen='bicubic' is not a band sharpener",
                                    r"sharpen takes 'auto', 'bilinear', 'dsen2', 'hpf'"),
    "sharpen-unknown": Case({"sharpen": "pansharp"}, errors.InvalidOptionError, r"unknown model 'pansharp'",
                            r"sharpen takes 'auto', 'bilinear'"),
    "sharpen-without-weights": Case({"sharpen": "dsen2"}, errors.WeightsNotFoundError,
                                    r"'dsen2' is an architecture with no trained weights", r"pass a weights file"),
    "sharpen-weights-not-a-sharpener": Case({"sharpen": f"{WEIGHTS}/b48.safetensors"}, errors.InvalidOptionError,
                                            r"model elsr is not a band sharpener", r"sharpener weights"),
    "sharpen-untrained": Case({"sharpen": f"{WEIGHTS}/sharpener.safetensors"}, errors.UntrainedWeightsError,
                              r"weights 'sharpener' are marked untrained", r"allow_untrained=True"),
    "sharpen-empty": Case({"sharpen": " "}, errors.InvalidOptionError, r"got an empty string",
                          r"'auto', 'bilinear', a sharpener name"),
    # options
    "option-unknown": Case({"tiles": 128}, errors.InvalidOptionError, r"unknown option\(s\) \['tiles'\]",
                           r"run_region accepts \[.*'tile'", cli=False),
    "option-min-clear-range": Case({"min_clear": 1.5}, errors.InvalidOptionError, r"got 1\.5",
                                   r"min_clear must be a fraction in \[0, 1\]"),
    "option-min-clear-nan": Case({"min_clear": NAN}, errors.InvalidOptionError, r"min_clear .*got nan",
                                 r"must be a number"),
    "option-min-clear-type": Case({"min_clear": "half"}, errors.InvalidOptionError, r"got 'half' \(str\)",
                                  r"min_clear must be a number", cli=False),
    "option-tile-small": Case({"tile": 8}, errors.InvalidOptionError, r"got 8", r"tile must be an integer >= 16"),
    "option-dtype": Case({"dtype": "float64"}, errors.InvalidOptionError, r"got 'float64'",
                         r"must be 'float32' or 'int16'"),
    "option-window": Case({"window": "30X"}, errors.InvalidOptionError, r"got '30X'", r"'10D', '30D'"),
    "option-max-cloud-cover": Case({"max_cloud_cover": 150.0}, errors.InvalidOptionError, r"got 150",
                                   r"percentage in \[0, 100\]"),
    "option-resolution-inf": Case({"resolution": INF}, errors.InvalidOptionError, r"got inf",
                                  r"must be a positive number", cli=False),
    "option-n-views-type": Case({"n_views": "3"}, errors.InvalidOptionError, r"got '3' \(str\)",
                                r"n_views must be an integer", cli=False),
    "option-clear-classes-string": Case({"clear_classes": "45"}, errors.InvalidOptionError, r"got '45'",
                                        r"list of integer QA classes", cli=False),
    "option-storage-options-type": Case({"storage_options": "anon"}, errors.InvalidOptionError, r"got 'anon'",
                                        r"storage_options must be a dict", cli=False),
    "option-workers-zero": Case({"n_workers": 0}, errors.InvalidOptionError, r"got 0", r"n_workers must be >= 1",
                                cli=False),
    "option-engine": Case({"engine": "tensorrt"}, errors.InvalidOptionError, r"got 'tensorrt'",
                          r"engine must be 'torch' or 'onnx'"),
    "option-engine-precision": Case({"engine": "onnx", "precision": "bf16"}, errors.InvalidOptionError,
                                    r"precision 'bf16' is for torch", r"use precision 'fp32' or engine 'torch'"),
    "engine-onnx-multi-frame": Case({"engine": "onnx", "model": "probav-highresnet-x3"}, errors.InvalidOptionError,
                                    r"probav-highresnet-x3 is multi-frame", r"use engine='torch'"),
    # region size: ~143 x 166 km at 10 m x4 -> ~3.8e9 output pixels per band and date
    "region-too-large": Case({"bbox": (3.0, 50.0, 5.0, 51.5)}, errors.RegionTooLargeError,
                             r"region \(3\.0, 50\.0, 5\.0, 51\.5\) is too large: about [\d,]+ x [\d,]+ = 3\.\de\+09 "
                             r"output pixels .* GB per date", r"Pass yes=True \(CLI: --yes\)"),
    # output
    "out-under-a-file": Case({"out": f"{TMP}/notes.txt/cube.zarr"}, errors.OutputNotWritableError,
                             r"notes\.txt is a file, not a folder", r"choose another output path",
                             setup=_file_in_the_way),
    "out-foreign-folder": Case({"out": f"{TMP}/results"}, errors.NotACubeError,
                               r"results exists and is not an srcube cube", r"choose another output path",
                               setup=_foreign_folder),
    "out-complete-cube": Case({"out": f"{TMP}/done.zarr"}, errors.OutputExistsError,
                              r"done\.zarr already holds a complete srcube cube",
                              r"overwrite=True \(CLI: --overwrite\)", setup=_complete_cube),
    "out-empty": Case({"out": ""}, errors.InvalidOptionError, r"got ''", r"out must be the path or URL"),
    "out-placeholder": Case({"out": f"{TMP}/{{region}}.zarr"}, errors.InvalidOptionError, r"\{region\}",
                            r"placeholders \{start\}, \{end\} and \{bbox\} only", api=False, cli=False),
    # storage options where a filesystem takes none, and the client: before the search (issue 22)
    "storage-options-on-a-local-path": Case(
        {"storage_options": {"anon": True}}, errors.InvalidOptionError,
        r"storage_options \['anon'\] were given but out '.*never\.zarr' is a local path",
        r"drop them \(CLI: --storage-option\), or write to an object store URL"),
    "storage-options-on-a-local-stack-cache": Case(
        {"out": "s3://cubes/never.zarr", "storage_options": {"anon": True}, "stack_cache": f"{TMP}/stacks"},
        errors.InvalidOptionError, r"stack_cache '.*stacks' is a local path", r"drop them \(CLI: --storage-option\)"),
    "client-not-an-address": Case({"client": "my-laptop"}, errors.InvalidOptionError,
                                  r"client 'my-laptop' is not a Dask scheduler address",
                                  r"'tcp://10\.0\.0\.5:8786' \(CLI: --scheduler\)", cli=False, flow=False),
    "client-a-number": Case({"client": 8786}, errors.InvalidOptionError, r"got a int",
                            r"a dask\.distributed Client or a scheduler address", cli=False, flow=False),
    "scheduler-not-an-address": Case({"scheduler": "my laptop"}, errors.InvalidOptionError,
                                     r"client 'my laptop' is not a Dask scheduler address", r"tcp://10\.0\.0\.5:8786",
                                     api=False, flow=False),
    # crafted weights metadata: bounded before anything is allocated (features=200000 asked elsr for 1.4 TB)
    "weights-huge-features": Case({"model": f"{WEIGHTS}/huge.safetensors"}, errors.ModelConfigError,
                                  r"config features=200000 is outside \[1, 1024\]", r"corrupt or crafted"),
    "weights-unknown-parameter": Case({"model": f"{WEIGHTS}/unknown-parameter.safetensors"}, errors.ModelConfigError,
                                      r"cannot be built with config .*unexpected keyword argument 'blocks'",
                                      r"model 'elsr'"),
    "weights-other-shapes": Case({"model": f"{WEIGHTS}/other-shapes.safetensors"}, errors.IncompatibleWeightsError,
                                 r"other-shapes\.safetensors does not fit architecture elsr",
                                 r"belong to different weights"),
}

_READ_ONLY = Case({"out": f"{TMP}/ro/cube.zarr"}, errors.OutputNotWritableError, r"no permission to write in .*ro",
                  r"choose another output path", setup=_read_only_folder)
_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
PARAMS = [pytest.param(c, id=k) for k, c in CASES.items()] + [
    pytest.param(_READ_ONLY, id="out-read-only-folder",
                 marks=pytest.mark.skipif(_ROOT, reason="root writes into read-only folders"))]


def test_the_table_is_large_and_distinct() -> None:
    assert len(CASES) >= 30
    assert len({json.dumps(c.kwargs, default=str, sort_keys=True) for c in CASES.values()}) == len(CASES)
    assert all(issubclass(c.error, errors.SrcubeError) for c in CASES.values())


# --- fixtures: weights files, no cluster, no catalog ------------------------------------------


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Weights files: trained for B04,B08 x4; one corrupted; garbage with a matching hash; a .pt; untrained (an SR
    model and a band sharpener)."""
    root = tmp_path_factory.mktemp("weights")
    net = models.build("elsr", scale=4, bands=("B04", "B08"))
    models.save_weights(net, root / "b48", trained=True, training={"data": "unit test"})
    models.save_weights(net, root / "corrupt", trained=True, training={"data": "unit test"})
    data = bytearray((root / "corrupt.safetensors").read_bytes())
    data[-3] ^= 0xFF
    (root / "corrupt.safetensors").write_bytes(bytes(data))
    models.save_weights(models.build("elsr", scale=4), root / "garbage", trained=True)  # any bands
    (root / "garbage.safetensors").write_bytes(b"this is not a safetensors file")
    doc = json.loads((root / "garbage.json").read_text())
    doc["sha256"] = models.weights.sha256_file(root / "garbage.safetensors")
    (root / "garbage.json").write_text(json.dumps(doc))
    (root / "model.pt").write_bytes(b"PK\x03\x04 a torch.save zip")
    models.save_weights(models.build("elsr", scale=4), root / "random", trained=False,
                        training={"data": "none: random initialisation"})
    models.save_weights(models.build("dsen2", features=8, blocks=1), root / "sharpener", trained=False,
                        training={"data": "none: random initialisation"})
    # crafted metadata beside real tensors (their sha256 matches): a huge architecture, a parameter elsr does not
    # take, and a config whose shapes are not the file's
    for name, config in (("huge", {"features": 200_000}), ("unknown-parameter", {"blocks": 3}),
                         ("other-shapes", {"features": 7})):
        models.save_weights(models.build("elsr", scale=4), root / name, trained=True)
        doc = json.loads((root / f"{name}.json").read_text())
        doc["config"].update(config)
        (root / f"{name}.json").write_text(json.dumps(doc))
    return root


class _NoClient:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the Dask client was used ({name}) before the bad input was reported")


@pytest.fixture
def guard(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """No LocalCluster (a stub that fails when used) and, unless allowed, no catalog request."""
    seen = {"cluster": 0, "catalog": 0, "allow_catalog": 0}

    @contextlib.contextmanager
    def fake_dask_client(client: Any = None, *, n_workers: int | None = None,
                         processes: bool | None = None) -> Iterator[Any]:
        seen["cluster"] += 1
        yield _NoClient()

    real_open = cat.open_catalog

    def guarded_open(profile: Any, **kw: Any) -> Any:
        seen["catalog"] += 1
        if not seen["allow_catalog"]:
            raise AssertionError("the catalog was asked before the bad input was reported")
        return real_open(profile, **kw)

    monkeypatch.setattr(region_mod, "dask_client", fake_dask_client)
    monkeypatch.setattr(cat, "open_catalog", guarded_open)
    # long messages on one line (no wrapping by the terminal width)
    monkeypatch.setattr(cli, "err_console", Console(stderr=True, width=100_000))
    return seen


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size if p.is_file() else -1, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


def _resolve(value: Any, tmp: Path, weights: Path) -> Any:
    if isinstance(value, str):
        return value.replace(TMP, str(tmp)).replace(WEIGHTS, str(weights))
    return value


def _request(case: Case, tmp: Path, weights: Path) -> dict[str, Any]:
    kw: dict[str, Any] = {"bbox": BBOX, "dates": DATES, "out": str(tmp / "never.zarr")}
    kw.update({k: _resolve(v, tmp, weights) for k, v in case.kwargs.items()})
    return kw


def _check_message(case: Case, text: str) -> None:
    assert re.search(case.match, text, re.M), f"{case.match!r} not in {text!r}"
    assert re.search(case.hint, text, re.M), f"{case.hint!r} not in {text!r}"


def _cli_args(kw: dict[str, Any]) -> list[str]:
    args = ["run"]
    for key, value in kw.items():
        opt = "--" + key.replace("_", "-")
        if key == "bbox" and not isinstance(value, str):
            args.append(f"--bbox={','.join(str(v) for v in value)}")
        elif key == "bands":
            args.append(f"--bands={','.join(value)}")
        elif key == "storage_options" and isinstance(value, dict):
            args += [f"--storage-option={k}={json.dumps(v)}" for k, v in value.items()]
        elif isinstance(value, bool):
            args += [opt] if value else []
        else:
            args.append(f"{opt}={value}")
    return args


def _flow(kw: dict[str, Any]) -> dict[str, Any]:
    from srcube.flows.region import build_request

    kw = dict(kw)
    return build_request(kw.pop("bbox"), kw.pop("dates"), kw.pop("catalog", "sample"), kw.pop("collection", None),
                         kw.pop("bands", None), kw.pop("model", "bicubic"), kw.pop("scale", None), kw.pop("out"),
                         kw, today=dt.datetime.now(dt.UTC).date())


# --- the table through the three entry points ---------------------------------------------------


@pytest.fixture
def case_env(request: pytest.FixtureRequest, tmp_path: Path, weights_dir: Path, guard: dict[str, int]
             ) -> Iterator[tuple[Case, dict[str, Any], Path]]:
    case: Case = request.param
    if case.catalog:
        request.getfixturevalue("sample_url")  # the local sample STAC API
        guard["allow_catalog"] = 1
    if case.setup is not None:
        case.setup(tmp_path)
    yield case, _request(case, tmp_path, weights_dir), tmp_path
    if (tmp_path / "ro").exists():
        (tmp_path / "ro").chmod(0o755)


@pytest.mark.parametrize("case_env", PARAMS, indirect=True)
def test_api(case_env: tuple[Case, dict[str, Any], Path], guard: dict[str, int]) -> None:
    case, kw, tmp = case_env
    if not case.api:
        pytest.skip("not an API parameter")
    before = _snapshot(tmp)
    with pytest.raises(case.error) as info:
        run_region(kw.pop("bbox"), kw.pop("dates"), **kw)
    assert isinstance(info.value, errors.SrcubeError)
    _check_message(case, str(info.value))
    assert _snapshot(tmp) == before, "something was written"
    assert guard["cluster"] == (1 if case.catalog else 0)
    assert guard["catalog"] == (1 if case.catalog else 0)


@pytest.mark.parametrize("case_env", PARAMS, indirect=True)
def test_cli(case_env: tuple[Case, dict[str, Any], Path], guard: dict[str, int]) -> None:
    case, kw, tmp = case_env
    if not case.cli:
        pytest.skip("not expressible as `srcube run` options")
    before = _snapshot(tmp)
    res = runner.invoke(cli.app, _cli_args(kw))
    text = res.output
    assert res.exit_code == 2, text
    assert isinstance(res.exception, SystemExit) and "Traceback" not in text
    choice = next((k for k in kw if k in RunOptions.model_fields and option_choices(k)
                   and kw[k] not in (option_choices(k) or ())), None)
    if choice is not None:  # a choice option: the command line itself refuses the value and lists the choices
        flat = " ".join(text.split())
        assert f"Invalid value for '--{choice.replace('_', '-')}'" in flat, text
        assert all(repr(c) in flat for c in option_choices(choice) or ()), text
    else:
        assert "error: " in text, text
        _check_message(case, text.split("error: ", 1)[1].strip())
    assert _snapshot(tmp) == before, "something was written"
    assert guard["catalog"] == (1 if case.catalog else 0)


@pytest.mark.parametrize("case_env", PARAMS, indirect=True)
def test_flow_parameters(case_env: tuple[Case, dict[str, Any], Path], guard: dict[str, int]) -> None:
    case, kw, tmp = case_env
    if not case.flow:
        pytest.skip("not a flow parameter")
    before = _snapshot(tmp)
    with pytest.raises(case.error) as info:
        req = _flow(kw)
        if case.catalog:  # the flow's first task: the search
            from srcube.flows.region import search_items

            search_items.fn(req)
    _check_message(case, str(info.value))
    assert _snapshot(tmp) == before, "something was written"
    assert guard["cluster"] == 0


def test_region_too_large_runs_with_yes(tmp_path: Path, guard: dict[str, int]) -> None:
    """``yes`` (and max_pixels=None) let the same region past the guard: prepare succeeds, nothing searched."""
    big = CASES["region-too-large"].kwargs["bbox"]
    out = str(tmp_path / "big.zarr")
    job = region_mod.RegionJob.prepare(big, DATES, out=out, yes=True)
    assert job.plan.region.as_tuple() == big
    region_mod.RegionJob.prepare(big, DATES, out=out, max_pixels=None)
    region_mod.RegionJob.prepare(big, DATES, out=out, max_pixels=1e10)
    with pytest.raises(errors.RegionTooLargeError, match=r"about [\d.,]+ GB per date for 1 band"):
        region_mod.RegionJob.prepare(big, DATES, out=out, bands=["B04"], scale=2, max_pixels=1e8)
    _flow({"bbox": big, "dates": DATES, "out": out, "yes": True})
    args = ["run", f"--bbox={','.join(map(str, big))}", f"--dates={DATES}", f"--out={out}"]
    res = runner.invoke(cli.app, args)
    assert res.exit_code == 2 and "--yes" in res.output
    assert guard == {"cluster": 0, "catalog": 0, "allow_catalog": 0} and not list(tmp_path.iterdir())
    # with --yes the run goes on to the search (which the guard stops here)
    res = runner.invoke(cli.app, [*args, "--yes"])
    assert isinstance(res.exception, AssertionError) and "catalog was asked" in str(res.exception)
    assert guard["catalog"] == 1 and not list(tmp_path.iterdir())


@pytest.mark.parametrize(("args", "bad"), [
    (["--tile", "abc"], "Invalid value for '--tile'"),
    (["--scale", "four"], "Invalid value for '--scale'"),
    (["--min-clear", "half"], "Invalid value for '--min-clear'"),
    (["--overwrite", "yes"], "unexpected extra argument(s) (yes)"),
], ids=["tile-word", "scale-word", "min-clear-word", "flag-with-value"])
def test_cli_rejects_malformed_option_values(tmp_path: Path, guard: dict[str, int], args: list[str], bad: str) -> None:
    out = tmp_path / "never.zarr"
    res = runner.invoke(cli.app, ["run", f"--bbox={','.join(map(str, BBOX))}", f"--dates={DATES}", f"--out={out}",
                                  *args], env={"COLUMNS": "300"})  # typer's usage errors: one line
    assert res.exit_code == 2 and bad in " ".join(res.output.split()) and "Traceback" not in res.output
    assert not list(tmp_path.iterdir()) and guard["cluster"] == 0


# --- the output's object store, the scheduler, a full disk, the cube commands (issue 22) -------------

SMALL = (4.465, 51.401, 4.487, 51.414)  # part of the sample region: a run of a few seconds


@pytest.fixture
def no_catalog(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Fail when the catalog is asked (the Dask client is real here: its own checks are under test)."""
    seen = {"catalog": 0}

    def refuse(profile: Any, **kw: Any) -> Any:
        seen["catalog"] += 1
        raise AssertionError("the catalog was asked before the bad input was reported")

    monkeypatch.setattr(cat, "open_catalog", refuse)
    monkeypatch.setattr(cli, "err_console", Console(stderr=True, width=100_000))
    return seen


@pytest.fixture
def no_aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No AWS credentials anywhere botocore looks: environment, files, instance metadata."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed when this returns: connections to it are refused


def _s3_options(endpoint: str, credentials: bool = True) -> dict[str, Any]:
    so: dict[str, Any] = {"client_kwargs": {"endpoint_url": endpoint, "region_name": S3_CREDS["AWS_REGION"]}}
    if credentials:
        so |= {"key": S3_CREDS["AWS_ACCESS_KEY_ID"], "secret": S3_CREDS["AWS_SECRET_ACCESS_KEY"]}
    return so


def _run_args(out: str, *extra: str) -> list[str]:
    return ["run", f"--bbox={','.join(map(str, BBOX))}", f"--dates={DATES}", f"--out={out}", "--model=bicubic",
            *extra]


S3_CASES = {  # out, credentials in the options, endpoint, error, what it names, what to do
    "s3-without-credentials": ("s3://cubes/never.zarr", False, "moto", errors.OutputNotWritableError,
                               r"output s3://cubes/never\.zarr: no credentials for the object store",
                               r"--storage-option key=.* or in the environment \(e\.g\. AWS_ACCESS_KEY_ID"),
    "s3-no-such-bucket": ("s3://no-such-bucket/never.zarr", True, "moto", errors.OutputNotWritableError,
                          r"bucket 'no-such-bucket' does not exist at this endpoint", r"create it first"),
    "s3-dead-endpoint": ("s3://cubes/never.zarr", True, "closed", errors.OutputUnreachableError,
                         r"output s3://cubes/never\.zarr: the object store did not answer",
                         r"check the endpoint \(storage option client_kwargs\.endpoint_url\)"),
}


@pytest.mark.parametrize("case", S3_CASES.values(), ids=list(S3_CASES))
def test_the_object_store_of_the_output_is_checked_before_the_search(
        case: tuple[Any, ...], s3_endpoint: str, no_aws_credentials: None, no_catalog: dict[str, int]) -> None:
    """Missing credentials, a missing bucket and a dead endpoint: typed errors from the plan (API) and exit 2
    (CLI), before the search, nothing written in the bucket; a dead endpoint within botocore's few retries."""
    import boto3

    url, credentials, where, error, match, hint = case
    endpoint = s3_endpoint if where == "moto" else f"http://127.0.0.1:{_closed_port()}"
    so = _s3_options(endpoint, credentials)
    t0 = time.monotonic()
    with pytest.raises(error) as info:
        run_region(BBOX, DATES, out=url, model="bicubic", storage_options=so)
    assert time.monotonic() - t0 < 60, "the typed error came late"
    _check_message(Case({}, error, match, hint), str(info.value))
    res = runner.invoke(cli.app, _run_args(url, *(f"--storage-option={k}={json.dumps(v)}" for k, v in so.items())))
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    _check_message(Case({}, error, match, hint), res.output.split("error: ", 1)[1])
    assert no_catalog["catalog"] == 0
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id=S3_CREDS["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=S3_CREDS["AWS_SECRET_ACCESS_KEY"], region_name=S3_CREDS["AWS_REGION"])
    assert "Contents" not in s3.list_objects_v2(Bucket="cubes", Prefix="never.zarr")


def test_the_object_store_probe_gives_up_on_an_endpoint_that_never_answers() -> None:
    """An endpoint that accepts connections and never answers: the output's probe ends within its bound (the
    run's network timeout), whatever botocore's timeouts and retries (five attempts)."""
    from srcube.pipeline.plan import probe_store
    from srcube.pipeline.write.store import CubeStore

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)  # the kernel accepts; nobody reads or answers
        store = CubeStore("s3://cubes/never.zarr", _s3_options(f"http://127.0.0.1:{server.getsockname()[1]}"))
        t0 = time.monotonic()
        with pytest.raises(errors.OutputUnreachableError, match=r"did not answer within 2 s"):
            probe_store(store, 2)
        assert time.monotonic() - t0 < 30


def test_a_scheduler_that_is_not_there_is_a_typed_error_before_the_search(
        tmp_path: Path, no_catalog: dict[str, int]) -> None:
    out = tmp_path / "never.zarr"
    address = f"tcp://127.0.0.1:{_closed_port()}"
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        with pytest.raises(errors.ClusterStartError, match=rf"could not connect to the Dask scheduler at {address}: "
                                                           r".*is it running and reachable from here"):
            run_region(BBOX, DATES, out=str(out), model="bicubic", client=address)
        res = runner.invoke(cli.app, _run_args(str(out), f"--scheduler={address}"))
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert f"could not connect to the Dask scheduler at {address}" in res.output
    assert no_catalog["catalog"] == 0 and not list(tmp_path.iterdir())  # no cube, no lock left behind


# a full disk: a real one, a small tmpfs (mounting needs privileges: root with CAP_SYS_ADMIN)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MB tmpfs at ``tmp_path/disk``: the template of the SMALL cube fits, its chunks do not."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = shutil.which("mount")
    proc = (subprocess.run([mount, "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], capture_output=True,
                           text=True, check=False) if mount and sys.platform.startswith("linux") else None)
    if proc is None or proc.returncode != 0:
        pytest.skip("a small real disk needs a tmpfs mount, which this machine refuses "
                    f"({proc.stderr.strip() if proc else 'no mount command'}); run the tests as root to cover it")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_disk_is_a_typed_error_and_the_same_run_then_resumes(small_disk: Path, sample_url: str,
                                                                    tmp_path: Path) -> None:
    from srcube.pipeline.write.store import CubeStore

    out = small_disk / "cube.zarr"
    args = ["run", f"--bbox={','.join(map(str, SMALL))}", f"--dates={DATES}", "--model=bicubic",
            "--bands=B02,B03,B04"]
    res = runner.invoke(cli.app, [*args, f"--out={out}"], env={"COLUMNS": "100000"})
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    text = " ".join(res.output.split("error: ", 1)[1].split())
    assert re.search(rf"the disk is full: writing {re.escape(str(out))} stopped with \[Errno 28\]", text), text
    assert re.search(r"every chunk written so far is kept\. Free space on the disk of .* \([\d.,]+ MB free there "
                     r"now\)", text), text
    assert "run the same request again: it resumes and writes only the missing chunks" in text
    store = CubeStore(str(out))
    assert store.status() == "incomplete"
    kept = sum(len(store.done(name)) for name in store.expected())
    # space freed (the same disk, larger): the same command finishes the cube, from where it stopped
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    res = runner.invoke(cli.app, [*args, f"--out={out}"], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    assert kept > 0 and store.status() == "complete" and "resumed" in res.output
    reference = run_region(SMALL, DATES, model="bicubic", bands=["B02", "B03", "B04"], out=str(tmp_path / "ref.zarr"))
    cube = xr.open_zarr(out)
    for name in ("reflectance", "clear", "clear_count"):
        xr.testing.assert_identical(cube[name], reference[name])
    assert cube.attrs["request_hash"] == reference.attrs["request_hash"]


def test_a_full_disk_is_not_worth_retrying() -> None:
    """A flow task that fills the disk fails at once (retries cannot free space)."""
    full = OSError(errno.ENOSPC, "No space left on device")
    assert not errors.is_transient(full) and errors.is_transient(OSError(errno.ECONNRESET, "reset"))
    with pytest.raises(errors.DiskFullError, match=r"free there now") as info:
        with errors.disk_full_is_typed("/tmp/x.zarr"):
            raise RuntimeError("a dask task failed") from full
    assert info.value.__cause__ is not None and not errors.is_transient(info.value)


# the cube commands: their arguments are checked before the cube is read


@pytest.fixture(scope="module")
def complete_cube(sample_url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cube") / "small.zarr"
    run_region(SMALL, DATES, model="bicubic", bands=["B02", "B03", "B04"], out=str(out))
    return out


CUBE_COMMANDS = {  # arguments after the cube ({tmp}: the test's folder, which holds a file "notes.txt"), what, hint
    "quicklook-size-zero": (["{tmp}/ql.png", "--size", "0"], errors.InvalidOptionError,
                            r"longest side in pixels\) must be an integer from 1 to 16384, got 0", r"CLI: --size 512"),
    "quicklook-size-negative": (["{tmp}/ql.png", "--size", "-5"], errors.InvalidOptionError, r"got -5",
                                r"CLI: --size 512"),
    "quicklook-onto-a-folder": (["{tmp}"], errors.OutputNotWritableError, r"is a folder",
                                r"give the PNG's file name, e\.g\. .*quicklook\.png"),
    "quicklook-into-no-folder": (["{tmp}/nowhere/ql.png"], errors.OutputNotWritableError,
                                 r"nowhere does not exist", r"create the folder or give another path"),
    "export-cog-onto-a-file": (["--cog", "{tmp}/notes.txt"], errors.OutputNotWritableError,
                               r"--cog .*notes\.txt is a file, not a folder", r"give a folder for the COGs"),
    "export-cog-under-a-file": (["--cog", "{tmp}/notes.txt/cogs"], errors.OutputNotWritableError,
                                r"notes\.txt is a file\)", r"give a folder for the COGs"),
}


@pytest.mark.parametrize("case", CUBE_COMMANDS.values(), ids=list(CUBE_COMMANDS))
def test_cube_commands_refuse_bad_arguments_with_a_typed_error(complete_cube: Path, tmp_path: Path,
                                                               case: tuple[Any, ...]) -> None:
    extra, error, match, hint = case
    (tmp_path / "notes.txt").write_text("a file")
    command = "export" if extra[0] == "--cog" else "quicklook"
    before = _snapshot(tmp_path)
    res = runner.invoke(cli.app, [command, str(complete_cube), *(a.format(tmp=tmp_path) for a in extra)],
                        env={"COLUMNS": "100000"})
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    _check_message(Case({}, error, match, hint), " ".join(res.output.split("error: ", 1)[1].split()))
    assert _snapshot(tmp_path) == before, "something was written"


def test_the_cube_functions_raise_the_same_typed_errors(complete_cube: Path, tmp_path: Path) -> None:
    from srcube.pipeline.write.export import export_cogs
    from srcube.pipeline.write.quicklook import quicklook_png, write_quicklook
    from srcube.pipeline.write.store import CubeStore

    cube = xr.open_zarr(complete_cube)
    (tmp_path / "notes.txt").write_text("a file")
    for size in (0, -1, 2.5, True, 10**6):
        with pytest.raises(errors.InvalidOptionError, match="must be an integer from 1 to"):
            quicklook_png(cube, max_side=size)  # type: ignore[arg-type]
    with pytest.raises(errors.OutputNotWritableError, match="is a folder"):
        write_quicklook(CubeStore(str(complete_cube)), tmp_path)
    with pytest.raises(errors.OutputNotWritableError, match="is a file, not a folder"):
        export_cogs(cube, tmp_path / "notes.txt")
    # the cube's time values are untrusted too: only dates become file names
    crafted = cube.assign_coords(time=np.array(["../../../evil"] * cube.sizes["time"], dtype=object))
    with pytest.raises(errors.CubeAttributeError, match=r"time value '\.\./\.\./\.\./evil' is not a date"):
        export_cogs(crafted, tmp_path / "cogs")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert [p.name for p in export_cogs(cube, tmp_path / "cogs", dates=["2024-05-23"])] == ["srcube_2024-05-23.tif"]


# crafted weights metadata (through run_region: the table above): the model layer's own bounds


def test_architecture_configs_are_bounded_before_anything_is_allocated() -> None:
    from srcube.models.registry import MAX_PARAMETERS, parameter_shapes

    with pytest.raises(models.ModelConfigError, match=r"features=200000 is outside \[1, 1024\]"):
        models.build("elsr", scale=4, features=200_000)
    with pytest.raises(models.ModelConfigError, match=r"blocks=-1 is outside \[1, 256\]"):
        models.build("lrnet", scale=4, blocks=-1)
    with pytest.raises(models.ModelConfigError, match=r"features=.*is not a finite number|is a dict"):
        models.build("elsr", scale=4, features={"x": 1})
    # each parameter within its limit, together far too large: counted on torch's meta device, never allocated
    with pytest.raises(models.ModelConfigError, match=rf"would hold [\d,]+ parameters, above .*{MAX_PARAMETERS:,}"):
        parameter_shapes("esrgan", scale=4, features=1024, blocks=64, growth=512)
    shapes = parameter_shapes("esrgan", scale=4)  # the default: 16.9 M, as built
    assert sum(math.prod(s) for s in shapes.values()) == sum(
        v.numel() for v in models.build("esrgan", scale=4).state_dict().values())


# --- arrays handed to super_resolve -------------------------------------------------------------


def _georef(a: np.ndarray, crs: bool = True) -> xr.DataArray:
    _, c, h, w = a.shape
    da = xr.DataArray(a, dims=("time", "band", "y", "x"),
                      coords={"y": 5_700_000.0 - 10.0 * np.arange(h), "x": 600_000.0 + 10.0 * np.arange(w),
                              "band": [f"B0{i + 2}" for i in range(c)]})
    return da.rio.write_crs("EPSG:32631") if crs else da


def _with(a: np.ndarray, index: tuple[int, ...], value: float) -> np.ndarray:
    a = a.copy()
    a[index] = value
    return a


GOOD = np.random.default_rng(0).random((1, 2, 12, 12), dtype=np.float32)
DATA_CASES = {
    "data-inf": (lambda: _georef(_with(GOOD, (0, 1, 3, 4), INF)), "bicubic", r"1 infinite value",
                 r"replace them"),
    "data-minus-inf": (lambda: _georef(_with(GOOD, (0, 0, 0, 0), -INF)), "bicubic", r"1 infinite value",
                       r"NaN as no data"),
    "data-all-nan": (lambda: _georef(np.full((1, 2, 12, 12), np.nan, np.float32)), "bicubic", r"all NaN",
                     r"nothing to super-resolve"),
    "data-no-crs": (lambda: _georef(GOOD, crs=False), "bicubic", r"no CRS", r"rio\.write_crs"),
    "data-strings": (lambda: _georef(GOOD).astype(str), "bicubic", r"holds <U\d+ values", r"as numbers"),
    "data-wrong-dims": (lambda: _georef(GOOD).rename(band="channel"), "bicubic", r"got \('time', 'channel'",
                        r"expected dims \(time, band, y, x\)"),
    "data-model-traversal": (lambda: _georef(GOOD), "../models/../../etc/passwd", r"'\.\./models/\.\./\.\./etc/passwd'",
                             r"use one of"),
}


@pytest.mark.parametrize(("make", "model", "match", "hint"), DATA_CASES.values(), ids=list(DATA_CASES))
def test_super_resolve_rejects_bad_arrays(make: Callable[[], xr.DataArray], model: str, match: str,
                                          hint: str) -> None:
    with pytest.raises((errors.InvalidDataError, errors.UnknownModelError)) as info:
        super_resolve(make(), model, scale=2)
    assert re.search(match, str(info.value)) and re.search(hint, str(info.value)), str(info.value)


def test_nan_pixels_stay_valid_input() -> None:
    """NaN is srcube's no-data: a few NaN pixels are fine (only inf and all-NaN arrays are refused)."""
    out = super_resolve(_georef(_with(GOOD, (0, 0, 5, 5), np.nan)), "bicubic", scale=2)
    assert np.isnan(out.values).sum() == 2 * 2 * 2 and np.isfinite(out.values).mean() > 0.9


# --- property-based fuzzing of the parsers --------------------------------------------------------

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**400), 10**400),
                     st.decimals(allow_nan=True).map(str), st.text(max_size=8), st.none(), st.booleans())
_bbox_inputs = st.one_of(
    st.text(max_size=60),
    st.lists(st.floats(-400, 400), min_size=4, max_size=4).map(lambda v: ",".join(map(str, v))),
    st.lists(_numbers, min_size=0, max_size=6),
    st.tuples(*[st.floats(allow_nan=True, allow_infinity=True)] * 4),
    st.lists(st.floats(-200, 200, width=32), min_size=4, max_size=4).map(np.array),
    st.integers(), st.none(), st.dictionaries(st.text(max_size=3), st.integers(), max_size=4),
)


def _valid_bbox(b: BBox) -> None:
    v = b.as_tuple()
    assert all(math.isfinite(x) for x in v)
    assert -180 <= b.min_lon < b.max_lon <= 180 and -80 <= b.min_lat < b.max_lat <= 84


@FUZZ
@given(_bbox_inputs)
def test_bbox_parser_returns_a_valid_box_or_a_typed_error(value: Any) -> None:
    try:
        b = BBox.parse(value)
    except errors.InvalidBBoxError as exc:
        assert str(exc)
        return
    _valid_bbox(b)
    assert BBox.parse(",".join(repr(x) for x in b.as_tuple())) == b == BBox.parse(b.as_tuple())


@FUZZ
@given(lon=st.floats(-180, 180), lat=st.floats(-80, 84), w=st.floats(1e-6, 360), h=st.floats(1e-6, 164))
def test_bbox_round_trips_and_estimates_a_positive_grid(lon: float, lat: float, w: float, h: float) -> None:
    try:
        b = BBox(lon, lat, min(lon + w, 180.0), min(lat + h, 84.0))
    except errors.InvalidBBoxError:  # zero width or height after clipping
        return
    _valid_bbox(b)
    assert BBox.parse(",".join(repr(x) for x in b.as_tuple())) == b
    assert BBox.parse(" ".join(repr(x) for x in b.as_tuple())) == b
    ny, nx = output_shape(b, 10.0, 4)
    assert ny >= 4 and nx >= 4
    try:
        assert check_region_size(b, 10.0, 4, n_bands=4, bytes_per_value=4, max_pixels=1e9, yes=False) == (ny, nx)
        assert ny * nx <= 1e9
    except errors.RegionTooLargeError as exc:
        assert ny * nx > 1e9 and "yes=True" in str(exc)
    assert check_region_size(b, 10.0, 4, n_bands=4, bytes_per_value=4, max_pixels=1e9, yes=True) == (ny, nx)


_TODAY = dt.datetime.now(dt.UTC).date()
_days = st.dates(dt.date(1970, 1, 1), _TODAY)
_day_texts = st.one_of(_days.map(dt.date.isoformat), st.from_regex(r"\A\d{4}-\d{2}-\d{2}\Z"), st.text(max_size=12))
_dates_inputs = st.one_of(
    st.text(max_size=40),
    st.tuples(_day_texts, _day_texts).map("/".join),
    st.from_regex(r"\A(last|past|next) ?\d{0,6} ?(days?|weeks?|months?)?\Z"),
    st.sampled_from(["today", "yesterday", "Last 2 Weeks", "last_30_days", "  ", "/", "//"]),
    st.tuples(st.one_of(_days, _day_texts, st.datetimes(), st.integers(), st.none()),
              st.one_of(_days, _day_texts, st.datetimes(), st.integers(), st.none())),
    st.lists(_day_texts, max_size=3), st.integers(), st.none(), st.floats(),
)


@FUZZ
@given(_dates_inputs)
def test_dates_parser_returns_a_valid_range_or_a_typed_error(value: Any) -> None:
    try:
        d = DateRange.parse(value)
    except errors.InvalidDatesError as exc:
        assert str(exc)
        return
    assert isinstance(d.start, dt.date) and not isinstance(d.start, dt.datetime)
    assert d.start <= d.end and d.start <= dt.datetime.now(dt.UTC).date()
    assert DateRange.parse(str(d)) == d  # str -> parse -> str round trip
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T00:00:00Z/\d{4}-\d{2}-\d{2}T23:59:59\.999999Z", d.to_stac())


@FUZZ
@given(start=_days, length=st.integers(0, 4000))
def test_dates_round_trip(start: dt.date, length: int) -> None:
    end = min(start + dt.timedelta(days=length), _TODAY)
    d = DateRange(start, end)
    assert DateRange.parse(str(d)) == d == DateRange.parse((start.isoformat(), end))
    assert str(DateRange.parse(str(d))) == str(d)


@FUZZ
@given(n=st.integers(1, 36600), unit=st.sampled_from(["days", "weeks"]), today=st.dates(dt.date(1900, 1, 1)))
def test_relative_windows_end_today(n: int, unit: str, today: dt.date) -> None:
    try:
        d = DateRange.parse(f"last {n} {unit}", today=today)
    except errors.InvalidDatesError:  # the window ends today, so only a `today` in the future can fail
        assert today > dt.datetime.now(dt.UTC).date()
        return
    assert d.end == today and (d.end - d.start).days + 1 == n * (7 if unit == "weeks" else 1)


@FUZZ
@given(st.text(max_size=30))
@example("B04\n")
@example("../B04")
@example("B04/../../etc")
def test_safe_names_never_traverse(name: str) -> None:
    try:
        ok = safe_name(name, "band", errors.UnknownBandError)
    except errors.UnknownBandError:
        return
    assert ok == name and "/" not in name and "\\" not in name and ".." not in name and name.strip() == name
    assert not name.startswith((".", "-")) and name.isprintable()
