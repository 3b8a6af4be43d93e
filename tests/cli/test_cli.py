import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from srcube import models
from srcube.cli.commands import app
from srcube.pipeline.errors import IncompleteCubeError
from srcube.pipeline.testing import sample
from srcube.pipeline.write.store import CubeStore, open_cube

runner = CliRunner()
BBOX = ",".join(map(str, sample.DEFAULT_BBOX))


def test_catalogs_and_models_commands():
    res = runner.invoke(app, ["catalogs"], env={"COLUMNS": "250"})
    assert res.exit_code == 0
    for name in ("earth-search", "planetary-computer", "cdse", "terrascope", "proba-v-s1-toc-333m (proba-v)"):
        assert name in res.output
    res = runner.invoke(app, ["models"])
    assert res.exit_code == 0 and "bicubic" in res.output


def test_run_rejects_bad_input_with_a_clear_message(tmp_path):
    out = tmp_path / "x.zarr"
    res = runner.invoke(app, ["run", "--bbox", "4.5,51.4,4.4,51.5", "--dates", DATES_OK, "--out", str(out)])
    assert res.exit_code == 2 and "error:" in res.output and "antimeridian" in res.output
    res = runner.invoke(app, ["run", "--bbox", BBOX, "--dates", "2024-06-01/2024-05-01", "--out", str(out)])
    assert res.exit_code == 2 and "reversed" in res.output
    assert not out.exists()


DATES_OK = sample.DEFAULT_DATES


def test_run_options_for_clearance_and_reflectance_rules_are_checked(tmp_path):
    out = tmp_path / "x.zarr"
    base = ["run", "--bbox", BBOX, "--dates", DATES_OK, "--out", str(out)]
    res = runner.invoke(app, [*base, "--clear-classes", "4,5,x"], env={"COLUMNS": "200"})
    assert res.exit_code == 2 and "clear_classes" in res.output
    res = runner.invoke(app, [*base, "--harmonize", "date"], env={"COLUMNS": "200"})
    assert res.exit_code == 2 and "harmonize" in res.output and "baseline" in res.output
    res = runner.invoke(app, [*base, "--max-pixels", "1000"], env={"COLUMNS": "200"})
    assert res.exit_code == 2 and "--yes" in res.output
    assert not out.exists()


def test_info_on_a_missing_cube(tmp_path):
    res = runner.invoke(app, ["info", str(tmp_path / "nothing.zarr")])
    assert res.exit_code == 2 and "no srcube cube" in res.output


def test_an_error_is_one_line_whatever_the_terminal_width(tmp_path):
    """Errors are not hard-wrapped at the console's width: a path in them copies and pastes whole, and what a
    test looks for does not depend on how long its tmp path is."""
    cube = tmp_path / ("deep-" * 30) / "nothing.zarr"
    res = runner.invoke(app, ["verify", str(cube)], env={"COLUMNS": "60"})
    assert res.exit_code == 2
    assert res.output.count("\n") == 1 and res.output.startswith(f"error: {cube}: no srcube cube here")


def _srcube(*args: str) -> list[str]:
    return [sys.executable, "-m", "srcube.cli", *args]


@pytest.mark.integration
def test_demo_command_end_to_end(sample_dir, tmp_path):
    out = tmp_path / "demo.zarr"
    proc = subprocess.run(_srcube("demo", "--out", str(out)), capture_output=True, text=True, timeout=240,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    for text in ("12 items found", "too cloudy", "time=4, band=4, y=1188, x=1252", "2.5 m", str(out)):
        assert text in proc.stdout
    ds = open_cube(str(out))
    assert ds.attrs["complete"] is True
    res = runner.invoke(app, ["info", str(out)], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    for text in ("complete", "EPSG:32631, 2.5 m", "B02, B03, B04, B08", f"{ds.attrs['model']} x4"):
        assert text in res.output
    written = re.search(r"chunks written\s*│\s*(\d+) / (\d+)", res.output)
    assert written and written[1] == written[2] and int(written[1]) > 0
    auto = models.default_model("sentinel-2", 4, bands=["B02", "B03", "B04", "B08"])  # model="auto"
    assert ds.attrs["model"] == ("bicubic" if auto == "bicubic" else models.load_model(auto).name)


RUN_ARGS = ("run", "--bbox", BBOX, "--dates", "2024-06-12/2024-06-22", "--bands", "B04,B08", "--tile", "128",
            "--model", "bicubic", "--workers", "1")


def _start_run(out: Path) -> subprocess.Popen[str]:
    # one worker and 45 chunk writes over seconds: the run is surely still writing when killed
    return subprocess.Popen(_srcube(*RUN_ARGS, "--out", str(out)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def _wait_for_first_chunk(out: Path, proc: subprocess.Popen[str], timeout: float = 120.0) -> None:
    # a chunk counts once the manifest records it (its data file lands just before)
    deadline = time.monotonic() + timeout
    store = CubeStore(str(out))

    def recorded() -> int:
        try:
            counts = store.chunk_counts("reflectance") if store.status() == "incomplete" else None
        except (OSError, ValueError, KeyError):
            return 0
        return counts[0] if counts else 0

    while recorded() < 1:
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before writing: {proc.stderr.read()[-2000:]}")
        assert time.monotonic() < deadline, "the run never wrote its template"
        time.sleep(0.05)


@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_interrupted_run_leaves_no_complete_cube(sample_dir, dask_client, tmp_path, sig):
    out = tmp_path / "killed.zarr"
    proc = _start_run(out)
    try:
        _wait_for_first_chunk(out, proc)
        os.killpg(proc.pid, sig)  # like kill -9 of the job, or Ctrl-C in its terminal
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if sig == signal.SIGINT:
        assert proc.returncode == 130
        assert "not marked complete" in " ".join(proc.stderr.read().split())
    store = CubeStore(str(out))
    assert store.status() == "incomplete"
    written, expected = store.chunk_counts("reflectance")
    assert 0 < written < expected
    with pytest.raises(IncompleteCubeError):
        open_cube(str(out))
    res = runner.invoke(app, ["info", str(out)], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "incomplete" in res.output
    assert json.loads(json.dumps(store.attrs()))["complete"] is False
    if sig == signal.SIGKILL:
        # the same command again resumes: exactly the chunks missing from the manifest are computed
        done = {name: len(store.done(name)) for name in store.expected()}
        missing = sum(store.expected().values()) - sum(done.values())
        again = subprocess.run(_srcube(*RUN_ARGS, "--out", str(out)), capture_output=True, text=True, timeout=240)
        assert again.returncode == 0, again.stderr[-2000:]
        resumed = open_cube(str(out))
        last = resumed.attrs["last_run"]
        assert last["resumed"] is True and 0 < missing < sum(resumed.attrs["chunk_manifest"].values())
        assert last["chunk_writes"] == missing, (last, done)
        assert f"resumed: {missing} of {sum(resumed.attrs['chunk_manifest'].values())} chunks" in " ".join(
            again.stdout.split())
        # and the cube is the one an uninterrupted run makes, chunk for chunk
        # (made in this process on the shared cluster: the chunks do not depend on who computes them)
        from srcube.pipeline import run_region

        reference = run_region(sample.DEFAULT_BBOX, "2024-06-12/2024-06-22", bands=["B04", "B08"], tile=128,
                               model="bicubic", out=str(tmp_path / "fresh.zarr"), client=dask_client)
        for name in ("reflectance", "clear", "clear_count"):
            assert resumed[name].equals(reference[name]), name
        assert not (out / ".srcube").exists()


def test_every_run_option_is_an_option_of_srcube_run_with_the_models_help_and_choices():
    import typer

    from srcube.pipeline.options import RunOptions, choices

    cmd = typer.main.get_command(app).commands["run"]
    params = {p.name: p for p in cmd.params}
    for name, f in RunOptions.model_fields.items():
        if name == "progress":  # srcube run always shows progress
            continue
        assert name in params, f"RunOptions.{name} is not reachable from srcube run"
        assert f.description in (params[name].help or ""), name
        if choices(name):  # a choice on the command line: another value is refused with the choices listed
            flag = params[name].opts[0]
            res = runner.invoke(app, ["run", "--bbox", "4.4,51.4,4.5,51.5", "--dates", "2024-05-01/2024-05-10",
                                      "--out", "x.zarr", flag, "not-a-choice"], env={"COLUMNS": "300"})
            text = " ".join(res.output.split())
            assert res.exit_code == 2 and f"Invalid value for '{flag}'" in text, text
            assert all(repr(c) in text for c in choices(name)), text


def test_srcube_version():
    from srcube.pipeline import __version__

    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"srcube {__version__}"


#: what the quick commands must not import: each a scientific stack, seconds of CPU before anything is shown
HEAVY = ("torch", "xarray", "odc.stac", "odc.geo", "prefect", "rasterio", "dask", "distributed", "zarr", "pandas",
         "safetensors")


def test_help_version_models_and_catalogs_import_no_scientific_stack():
    """A fresh interpreter runs the quick commands one after the other as the console script does (srcube.cli.main):
    none imports torch, xarray, odc-stac, Prefect, rasterio, Dask or zarr, and --help still lists every command."""
    import typer

    code = ("import json, sys\nfrom srcube.cli import main\nout = {}\n"
            "for args in (['--help'], ['--version'], ['models'], ['catalogs']):\n"
            "    sys.argv = ['srcube', *args]\n"
            "    try:\n        main()\n    except SystemExit as exc:\n        assert not exc.code, (args, exc.code)\n"
            f"    out[args[0]] = [m for m in {HEAVY!r} if m in sys.modules]\n"
            "print(json.dumps(out))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "250"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == {"--help": [], "--version": [], "models": [], "catalogs": []}
    listed = re.findall(r"^│ (\S+) ", proc.stdout, re.M)
    assert set(typer.main.get_command(app).commands) <= set(listed), listed
    for name in models.list_models():
        assert f"│ {name} " in proc.stdout, name


def test_the_training_commands_are_registered_by_their_module():
    import inspect

    import typer

    from srcube.cli import training

    commands = typer.main.get_command(app).commands
    for name in ("train", "ship", "evaluate"):
        fn = getattr(training, f"{name}_cmd")
        assert commands[name].help == inspect.getdoc(fn)
        assert [p.name for p in commands[name].params] == list(inspect.signature(fn).parameters)


def test_run_passes_every_kind_of_option_through(monkeypatch, tmp_path):
    """Options of each kind typed on the command line reach run_region as the options model wants them."""
    import srcube.cli.commands as commands

    seen = {}
    monkeypatch.setattr(commands, "_run", lambda out, summary, **kw: seen.update(kw, out=out))
    res = runner.invoke(app, ["run", "--bbox", "4.4,51.4,4.5,51.5", "--dates", "2024-05-01/2024-05-10",
                              "--out", str(tmp_path / "c.zarr"), "--bands", "B04,B08", "--dtype", "int16",
                              "--clear-classes", "4,5", "--storage-option", "anon=true", "--storage-option",
                              "endpoint=http://x", "--no-consistency", "--workers", "2", "--min-clear", "0.3"])
    assert res.exit_code == 0, res.output
    assert seen["bands"] == ["B04", "B08"] and seen["dtype"] == "int16" and seen["clear_classes"] == [4, 5]
    assert seen["storage_options"] == {"anon": True, "endpoint": "http://x"} and seen["consistency"] is False
    assert seen["n_workers"] == 2 and seen["min_clear"] == 0.3 and "harmonize" not in seen  # defaults stay unset
