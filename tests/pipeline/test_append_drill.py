"""The append drill (issue 22): an append stopped at each of its steps in turn, then run again, gives the cube an
uninterrupted append gives, array for array, overview for overview, stored byte for stored byte. While it is
stopped, ``srcube info`` summarises the cube without a traceback, xarray opens it with the STAC asset's open
options, and the request that made the cube is refused with the advice to run the append again.

The crash is injected by the test only: a step function of :mod:`srcube.pipeline.append` (or a call inside it)
is replaced for one run by one that raises :class:`Crash`, a ``BaseException`` that nothing in srcube catches,
as a killed process would not (its ``finally`` blocks do run: the lock is released); one drill kills a real
``srcube run --mode append`` process with SIGKILL at the overview step (its lock is then taken over)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import zarr
from typer.testing import CliRunner

from srcube.cli.commands import app
from srcube.pipeline import append, run_region
from srcube.pipeline.errors import CubeAttributeError, IncompleteCubeError, OutputExistsError, StaleLockWarning
from srcube.pipeline.testing import sample
from srcube.pipeline.write import overviews, stac, store, verify
from srcube.pipeline.write.stac import OPEN_KWARGS
from srcube.pipeline.write.store import CubeStore, open_cube

pytestmark = pytest.mark.integration

# a quarter of the sample region (one overview level), small tiles (several chunks per date), bicubic: fast
_B = sample.DEFAULT_BBOX
BBOX = (_B[0], _B[1], (_B[0] + _B[2]) / 2, (_B[1] + _B[3]) / 2)
KW: dict[str, Any] = {"model": "bicubic", "bands": ["B04", "B08"], "tile": 64}
MAY, LATER = "2024-05-01/2024-05-31", "2024-05-15/2024-06-30"
#: cube attributes that differ between any two runs, however they went: this append's timings and what it did
#: (``last_run``: resumed, chunks computed); the staging cube's creation time inside ``appended``
VARY = ("timings_s", "last_run")


class Crash(BaseException):
    """The process dies here (test)."""


@dataclass(frozen=True)
class Drill:
    base: Path  # the cube before the append (complete), and its STAC folder beside it
    staged: Path  # a folder: that cube and its complete staging cube, as an append leaves them before step 3
    reference: Path  # the cube an uninterrupted append makes


def _copy(src: Path, dst: Path) -> None:
    """A cube with what lies beside it (staging cube, STAC folder), into the folder ``dst``."""
    dst.mkdir(parents=True, exist_ok=True)
    for p in src.parent.iterdir():
        if p.name.startswith(src.name) and not p.name.endswith(".lock"):
            shutil.copytree(p, dst / p.name)


@pytest.fixture(scope="module")
def drill(sample_dir, tmp_path_factory) -> Drill:
    root = tmp_path_factory.mktemp("drill")
    base = root / "base" / "cube.zarr"
    run_region(BBOX, MAY, out=str(base), mode="append", **KW)  # no cube yet: a new one
    _copy(base, root / "ref")
    real = append._finish

    def keep_staged(state: Any, *, marked: bool) -> Any:
        _copy(root / "ref" / "cube.zarr", root / "staged")
        return real(state, marked=marked)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(append, "_finish", keep_staged)
        grown = run_region(BBOX, LATER, out=str(root / "ref" / "cube.zarr"), mode="append", **KW)
    assert grown.sizes["time"] > 2 and (root / "staged" / "cube.zarr.append").exists()
    return Drill(base, root / "staged", root / "ref" / "cube.zarr")


# --- the steps, and how each is stopped --------------------------------------------------------------------


def _raiser(where: str) -> Callable[..., None]:
    def crash(*args: Any, **kwargs: Any) -> None:
        raise Crash(f"killed {where}")
    return crash


def _before(step: str) -> Callable[[pytest.MonkeyPatch], None]:
    """Stop the append right before ``step`` (a function of :mod:`srcube.pipeline.append`)."""
    def install(mp: pytest.MonkeyPatch) -> None:
        mp.setattr(append, step, _raiser(f"before {step}"))
    return install


def _at_call(owner: Any, name: str, n: int) -> Callable[[pytest.MonkeyPatch], None]:
    """Stop the append at the ``n``-th call of ``owner.name`` (mid-step: the calls before it done)."""
    def install(mp: pytest.MonkeyPatch) -> None:
        real, calls, lock = getattr(owner, name), [0], threading.Lock()

        def counted(*args: Any, **kwargs: Any) -> Any:
            with lock:
                calls[0] += 1
                if calls[0] == n:
                    raise Crash(f"killed at call {n} of {name}")
            return real(*args, **kwargs)
        mp.setattr(owner, name, counted)
    return install


def _mid_overviews(mp: pytest.MonkeyPatch) -> None:
    """Stop the append once an overview level has grown, before its new time steps are written."""
    real = xr.Dataset.to_zarr

    def crash(self: xr.Dataset, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("region") is not None and str(kwargs.get("group", "")).startswith(overviews.GROUP):
            raise Crash("killed writing the overviews")
        return real(self, *args, **kwargs)
    mp.setattr(xr.Dataset, "to_zarr", crash)


#: the runs a drill stops: the whole append, from the cube before it ("run"), or from its complete staging cube
#: ("staged": steps 3-11, what :func:`~srcube.pipeline.append.append_region` does once it has the staging
#: cube, without searching again; the search and staging do not touch the cube)
RUN, STAGED = "run", "staged"
#: what is stopped: (how, which run, the cube's status once stopped)
STEPS = {
    "staging (its 3rd chunk write)": (_at_call(store, "_write_block", 3), RUN, "complete"),
    "mark (staging complete)": (_before("_mark"), RUN, "complete"),
    "resize (after the first array)": (_at_call(zarr.Array, "resize", 2), STAGED, "appending"),
    "region writes (after two arrays)": (_at_call(append, "_copy_array", 3), STAGED, "appending"),
    "overviews (after clear_count)": (_before("_extend_overviews"), STAGED, "appending"),
    "overviews (a level grown, not written)": (_mid_overviews, STAGED, "appending"),
    "consolidation (done, STAC not)": (_before("_describe"), STAGED, "appending"),
    "STAC (written, not complete)": (_before("_complete"), STAGED, "appending"),
    "staging removal (complete, staging left)": (_before("_remove_staging"), STAGED, "complete"),
}


def _append_staged(out: Path) -> None:
    """Steps 3-11 of an append whose staging cube is complete, under the cube's lock as an append holds it."""
    main = CubeStore(str(out))
    lock = main.lock(note="drill")
    lock.acquire()
    try:
        state = append._Append.of(main, append._staging(main), base=None, timings={}, last_run={"mode": "append"})
        append._finish(state, marked=False)
    finally:
        lock.release()


# --- checks ------------------------------------------------------------------------------------------------


def _files(root: Path) -> dict[str, bytes | None]:
    """Every file of a cube: chunk bytes by relative path (metadata: its name only; it holds times)."""
    return {str(p.relative_to(root)): p.read_bytes() if "/c/" in f"/{p.relative_to(root)}" else None
            for p in sorted(root.rglob("*")) if p.is_file()}


def _attrs(ds: xr.Dataset) -> dict[str, Any]:
    attrs = {k: v for k, v in ds.attrs.items() if k not in VARY}
    # when the staging cube was written (again, after a crash while writing it)
    attrs["appended"] = [{k: v for k, v in a.items() if k != "created"} for a in attrs.get("appended", [])]
    return attrs


def _same_cube(out: Path, ref: Path) -> None:
    """``out`` is the reference cube: status, every array (and coordinate), every overview level, the attributes
    but :data:`VARY`, the stored chunks byte for byte, the STAC Item; no staging cube or lock left."""
    got, want = open_cube(str(out)), open_cube(str(ref))
    assert sorted(got.variables) == sorted(want.variables)
    for name in want.variables:
        np.testing.assert_array_equal(got[name].values, want[name].values, err_msg=str(name))
    assert _attrs(got) == _attrs(want)
    for f in want.attrs["overviews"]["factors"]:
        levels = [xr.open_dataset(p, **{**OPEN_KWARGS, "group": f"overviews/{f}"}) for p in (out, ref)]
        assert sorted(levels[0].variables) == sorted(levels[1].variables)
        for name in levels[1].variables:
            np.testing.assert_array_equal(levels[0][name].values, levels[1][name].values, err_msg=f"x{f} {name}")
    assert _files(out) == _files(ref)
    items = [json.loads(next(Path(f"{p}.stac").glob("cube-*.json")).read_text()) for p in (out, ref)]
    assert items[0]["properties"] == items[1]["properties"]
    assert not Path(f"{out}.append").exists() and not Path(f"{out}.lock").exists()


def _check_stopped(out: Path, status: str, base: int) -> None:
    """What a user meets while the append is stopped: the status, ``srcube info``, ``srcube verify`` (and
    ``--repair``: refused with the advice to run the append again first, or the cube is sound), the STAC open
    options, and the request that made the cube refused with the right advice."""
    assert CubeStore(str(out)).status() == status
    res = CliRunner().invoke(app, ["info", str(out)], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and res.exception is None, res.output
    assert ("appending" in res.output) == (status == "appending"), res.output
    for args in (["verify", str(out)], ["verify", str(out), "--repair"]):
        res = CliRunner().invoke(app, args)
        if status == "appending":
            assert res.exit_code == 2 and "run that append again first" in res.output, (args, res.output)
            assert "Traceback" not in res.output
        else:
            assert res.exit_code == 0 and "sound" in res.output, (args, res.output)
    if status == "appending":
        for check in (verify.verify, verify.repair):
            with pytest.raises(IncompleteCubeError, match=r"run that append again first .*--mode append"):
                check(str(out))
    ds = xr.open_dataset(out, **OPEN_KWARGS)  # the cube as it was before the append, or as it is after
    level = xr.open_dataset(out, **{**OPEN_KWARGS, "group": "overviews/4"})
    assert ds.sizes["time"] == level.sizes["time"] and ds.sizes["time"] >= base
    ds.close()
    level.close()
    refused = IncompleteCubeError if status == "appending" else OutputExistsError
    with pytest.raises(refused, match="--mode append" if status == "appending" else "overwrite"):
        run_region(BBOX, MAY, out=str(out), **KW)


@pytest.mark.parametrize("step", list(STEPS))
def test_append_stopped_at_each_step_then_run_again_is_the_uninterrupted_append(drill, tmp_path, step):
    stop, run, status = STEPS[step]
    _copy(drill.base if run == RUN else drill.staged / "cube.zarr", tmp_path)
    out = tmp_path / "cube.zarr"
    with pytest.MonkeyPatch.context() as mp:
        stop(mp)
        with pytest.raises(Crash):
            if run == RUN:
                run_region(BBOX, LATER, out=str(out), mode="append", **KW)
            else:
                _append_staged(out)
    assert not Path(f"{out}.lock").exists()  # released on the way out
    _check_stopped(out, status, base=2)
    grown = run_region(BBOX, LATER, out=str(out), mode="append", **KW)  # the same append again
    assert grown.attrs["complete"] is True
    _same_cube(out, drill.reference)


def _set_attr(cube: Path, name: str, value: Any) -> None:
    """Change one of the cube's root attributes, as a sharer of the cube could."""
    meta = cube / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"][name] = value
    meta.write_text(json.dumps(doc))


def test_a_crafted_append_base_is_refused_before_the_append_is_finished(drill, tmp_path):
    """``append_base`` says where the staging cube's steps go when an append cut short is finished: a value that
    is not a whole number of steps its arrays along time agree with is a CubeAttributeError, and neither cube is
    changed; with the attribute as srcube wrote it, the same append ends as the uninterrupted one."""
    _copy(drill.staged / "cube.zarr", tmp_path)
    out = tmp_path / "cube.zarr"
    with pytest.MonkeyPatch.context() as mp:
        _before("_grow")(mp)
        with pytest.raises(Crash):
            _append_staged(out)
    written = CubeStore(str(out)).attrs()["append_base"]
    assert written == 2
    for crafted in ("2", None, True, 0, -1, 3, 10**9, [2]):
        _set_attr(out, "append_base", crafted)
        before = (_files(out), _files(Path(f"{out}.append")))
        with pytest.raises(CubeAttributeError, match=r"append_base attribute.*nothing was changed"):
            run_region(BBOX, LATER, out=str(out), mode="append", **KW)
        assert (_files(out), _files(Path(f"{out}.append"))) == before, crafted
        assert not Path(f"{out}.lock").exists()
    _set_attr(out, "append_base", written)
    run_region(BBOX, LATER, out=str(out), mode="append", **KW)
    _same_cube(out, drill.reference)


CHILD = """
import os, signal, sys
import xarray as xr
real = xr.Dataset.to_zarr
def die(self, *args, **kwargs):  # SIGKILL once the overview level has grown, before its new steps are written
    if kwargs.get("region") is not None and str(kwargs.get("group", "")).startswith("overviews"):
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, *args, **kwargs)
xr.Dataset.to_zarr = die
from srcube.cli.commands import app
app(sys.argv[1:], prog_name="srcube")
"""


def test_append_killed_writing_overviews_is_finished_by_the_same_command(drill, sample_dir, tmp_path):
    """The finding of issue 22: ``srcube run --mode append`` killed (SIGKILL) while it writes the overviews."""
    _copy(drill.base, tmp_path)
    out = tmp_path / "cube.zarr"
    args = ["run", "--bbox", ",".join(map(str, BBOX)), "--dates", LATER, "--out", str(out), "--model", "bicubic",
            "--bands", "B04,B08", "--tile", "64", "--mode", "append"]
    killed = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "SRCUBE_SAMPLE_DIR": str(sample_dir)})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert Path(f"{out}.lock").exists()  # a dead writer's lock
    _check_stopped(out, "appending", base=2)
    res = CliRunner().invoke(app, ["info", str(out)], env={"COLUMNS": "200"})
    assert "run that append again" in " ".join(res.output.split())
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", StaleLockWarning)  # recorded, and checked below; others as configured
        res = CliRunner().invoke(app, args)  # the same command again
    assert res.exit_code == 0, res.output
    assert any(issubclass(w.category, StaleLockWarning) and "is gone" in str(w.message) for w in seen)
    _same_cube(out, drill.reference)


def test_a_first_run_killed_before_its_stac_item_is_written_writes_it_when_run_again(sample_dir, tmp_path):
    """The first run's last steps are the same kind of thing: the STAC Item is written before the cube says
    complete, so a run killed in between is finished by the same request (it used to leave a complete cube
    without its Item, and the same request was then refused)."""
    out = tmp_path / "first.zarr"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(stac, "write_stac", _raiser("writing the STAC Item"))
        with pytest.raises(Crash):
            run_region(BBOX, MAY, out=str(out), **KW)
    assert CubeStore(str(out)).status() == "incomplete" and not Path(f"{out}.stac").exists()
    cube = run_region(BBOX, MAY, out=str(out), **KW)  # the same request again
    assert cube.attrs["complete"] is True and Path(f"{out}.stac/collection.json").exists()
