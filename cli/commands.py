"""The ``srcube`` command line: run, demo, info, export, quicklook, view, verify, publish, catalogs, models."""

from __future__ import annotations

import contextlib
import enum
import inspect
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table
from rich.text import Text

from srcube.pipeline import redact
from srcube.pipeline.errors import SrcubeError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="srcube: super-resolved, analysis-ready data cubes from satellite archives.")
console = Console()
err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        from srcube.pipeline import __version__

        console.print(f"srcube {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="print the version and exit")] = False) -> None:
    """srcube: super-resolved, analysis-ready data cubes from satellite archives."""


def _setup_logging(verbose: bool) -> None:
    """srcube's own INFO messages on stderr; other libraries (distributed, ...) only warnings."""
    handler = RichHandler(console=err_console, show_path=False)
    # distributed configures its loggers at INFO on import; keep its chatter below warnings
    handler.addFilter(lambda r: r.levelno >= logging.WARNING or r.name.split(".")[0] == "srcube")
    logging.basicConfig(level=logging.WARNING, format="%(message)s", datefmt="[%X]", handlers=[handler], force=True)
    logging.getLogger("srcube").setLevel(logging.DEBUG if verbose else logging.INFO)
    redact.install()  # no credentials in what srcube prints


def _fail(exc: BaseException, code: int = 2) -> None:
    # the message is plain text (_shown): brackets in it (lists, paths, a cube's attributes) are not rich markup. It
    # is not wrapped at the console's width (soft_wrap): a path or command in it stays whole for copy and paste, and
    # the terminal folds it
    err_console.print(Text.assemble(("error:", "bold red"), " ", _shown(redact.redact(str(exc)), lines=True)),
                      soft_wrap=True)
    raise typer.Exit(code)


#: C0 and C1 control characters and DEL, shown as ``\xNN``: an escape sequence from a cube never reaches the
#: terminal (it could rewrite the screen, retitle the window or make a hyperlink)
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_CONTROLS_BUT_LINES = {c: s for c, s in _CONTROLS.items() if chr(c) not in "\n\t"}


def _shown(value: object, style: str = "", *, lines: bool = False) -> Text:
    """``value`` as plain text for a table cell or a line (``lines``: newlines and tabs kept, as in messages). What
    a cube holds (attributes, coordinates, array names) is untrusted: cubes are shared. It is shown as it is, never
    read as rich markup (``[link=...]``, styles), emoji codes or terminal control sequences; so are what a catalog
    answers and the paths given."""
    return Text(str(value).translate(_CONTROLS_BUT_LINES if lines else _CONTROLS), style=style)


def _frames_table(frames: list[dict[str, Any]]) -> Table:
    table = Table(title="frames (one per solar day)")
    for col in ("date", "clear", "score", "used", "reason"):
        table.add_column(col)
    for f in frames:
        table.add_row(_shown(f["time"]), f"{f['clear_fraction']:.1%}",
                      f"{f.get('clearance_score', f['clear_fraction']):.2f}", "yes" if f["kept"] else "[red]no[/]",
                      _shown(f["reason"]))
    return table


def _windows_table(windows: list[dict[str, Any]]) -> Table:
    table = Table(title="composite windows (multi-frame)")
    for col in ("window", "frames", "views", "status", "reason"):
        table.add_column(col)
    for w in windows:
        status = _shown(w["status"], "" if w["status"] == "ok" else "yellow")
        table.add_row(_shown(f"{w['start'][:10]} .. {w['end'][:10]}"), _shown(w["candidates"]),
                      str(len(w["views"])), status, _shown(w["reason"]))
    return table


@contextlib.contextmanager
def _interrupts() -> Iterator[threading.Event]:
    """Ctrl-C (SIGINT) raises KeyboardInterrupt, as Python's own handler does, and is also remembered: Python swallows
    a KeyboardInterrupt raised while a finalizer or a weakref callback runs (it prints "Exception ignored"), and the
    run would then go on to mark its cube complete. The run's steps check the event (:func:`_run`'s ``on_step``), so a
    remembered Ctrl-C stops the run at the next step, before the cube is finalized. Off the main thread (where no
    signal handler can be set) it is Python's handler alone."""
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return

    def on_sigint(signum: int, frame: Any) -> None:
        event.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield event
    finally:
        signal.signal(signal.SIGINT, previous)


def _run(out: str, print_summary: bool, **kwargs: Any) -> None:
    from srcube.pipeline.region import run_region

    steps: dict[str, float] = {}  # this run's, step by step (the cube's attributes may hold an earlier run's)
    runs: list[Any] = []

    def on_step(name: str, run: Any) -> None:
        # a Ctrl-C that Python swallowed (``interrupted``: bound by _interrupts below, before any step runs): the run
        # stops before the cube says complete
        if interrupted.is_set():
            raise KeyboardInterrupt
        steps.update(run.steps)
        runs.append(run)
        if name == "search+assemble":
            source = "from the stack cache" if run.from_cache else "found"
            console.print(f"[bold]search[/]: {run.items_found} items {source}")
        elif name == "clearance":
            console.print(_frames_table([f.__dict__ for f in run.frames]))
            if run.windows:
                console.print(_windows_table([w.to_json() for w in run.windows]))

    t0 = time.perf_counter()
    try:
        with _interrupts() as interrupted:
            cube = run_region(out=out, on_step=on_step, progress=True, **kwargs)
    except SrcubeError as exc:
        _fail(exc)
        return
    except KeyboardInterrupt:
        err_console.print(Text.assemble(("interrupted", "bold red"), _shown(
            f": the cube at {out} is not marked complete; run the same command again to redo it")), soft_wrap=True)
        raise typer.Exit(130) from None
    elapsed = time.perf_counter() - t0
    if print_summary:
        sizes = ", ".join(f"{k}={v}" for k, v in cube.reflectance.sizes.items())
        units = "deg" if cube.attrs["crs"] == "EPSG:4326" else "m"
        # an append's cube: the attributes of a cube that may have come from elsewhere
        console.print(Text.assemble(("output", "bold"), _shown(
            f": reflectance ({sizes}) at {cube.attrs['resolution']:g} {units}, {cube.attrs['crs']}, model "
            f"{cube.attrs['model']} x{cube.attrs['scale']}")))
        if runs and runs[-1].resumed:  # an append's chunks: those of its staging cube
            total = cube.attrs.get("last_run", {}).get("chunks") or sum(cube.attrs.get("chunk_manifest", {}).values())
            console.print(f"[bold]resumed[/]: {runs[-1].chunk_writes} of {total} chunks computed "
                          "(the rest were in the cube already)")
        console.print(f"[bold]time[/]: {elapsed:.1f} s ({json.dumps(steps)})")
        # paths and URLs whole on their line (soft_wrap), for copy and paste and scripts
        console.print(Text.assemble(("cube", "bold"), ": ", _shown(Path(out).resolve() if "://" not in out else out)),
                      soft_wrap=True)


# --- srcube run: its options generated from RunOptions ----------------------------------------------

#: option name -> CLI flags where they differ from --name-with-dashes
_FLAGS: dict[str, tuple[str, ...]] = {"n_workers": ("--workers", "--n-workers"), "yes": ("--yes", "-y")}
#: run_region's own arguments on the command line (before the options)
_ARGS = [
    ("bbox", str, ..., "min_lon,min_lat,max_lon,max_lat (EPSG:4326)"),
    ("dates", str, ..., "YYYY-MM-DD/YYYY-MM-DD (inclusive), or 'last 30 days'"),
    ("out", str, ..., "output zarr path or fsspec URL"),
    ("catalog", str, "sample", "profile name (see `srcube catalogs`) or STAC API URL"),
    ("collection", str | None, None, "collection id (default: the profile's)"),
    ("bands", str | None, None, "comma-separated bands, e.g. B02,B03,B04,B08"),
    ("model", str, "auto", "model name (see `srcube models`) or weights; auto: the shipped model that beats "
                           "bicubic on its test split (multi-frame where --window asks for composites), else bicubic"),
    ("scale", int | None, None, "upscaling factor (default: the weights', or 4)"),
]
#: options the command sets itself
_NOT_ON_CLI = {"progress"}


def _choice_enum(name: str, allowed: tuple[str, ...]) -> Any:
    """A string enum of the allowed values (typer shows and checks enum choices)."""
    return enum.StrEnum(f"{name}_choice", {f"v{i}": a for i, a in enumerate(allowed)})


def _cli_param(name: str) -> inspect.Parameter:
    """The typer parameter of one RunOptions field: type, default, help and choices from the model."""
    from srcube.pipeline.options import RunOptions, choices

    f = RunOptions.model_fields[name]
    text = str(f.annotation)
    nullable = "None" in text
    flags = _FLAGS.get(name, ("--" + name.replace("_", "-"),))
    default = f.default
    kwargs: dict[str, Any] = {"help": f.description, "show_default": default is not None}
    allowed = choices(name)
    kind: Any
    if allowed:  # a choice: typer lists the values and refuses others
        kind = _choice_enum(name, allowed)
    elif "tuple" in text:  # QA classes: "4,5,6"
        kind, kwargs["help"] = str, f"{f.description} (comma-separated)"
    elif "dict" in text:  # storage options: --storage-option key=value, repeatable
        kind, flags = list[str], ("--storage-option",)
        kwargs["help"] = f"{f.description}: KEY=VALUE, repeatable (VALUE as JSON where it parses)"
        default = None
    elif "bool" in text:
        kind = bool
        if nullable or default is False:
            flags = (f"{flags[0]}/--no-{flags[0][2:]}", *flags[1:]) if name != "yes" else flags
    elif "float" in text:
        kind = float
    elif "int" in text:
        kind = int
    else:
        kind = str
    if nullable and kind is not bool and not (isinstance(kind, type) and issubclass(kind, list)):
        kind = kind | None
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[kind, typer.Option(*flags, **kwargs)])


def _storage_options(pairs: list[str] | None) -> dict[str, Any] | None:
    if not pairs:
        return None
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--storage-option takes KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def run_options(kw: dict[str, Any]) -> dict[str, Any]:
    """The RunOptions a command line gave (those that differ from their defaults), as run_region takes them."""
    from srcube.pipeline.options import RunOptions

    kw = {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in kw.items()}
    options = {k: v for k, v in kw.items() if v != RunOptions.model_fields[k].default}
    if "clear_classes" in options:
        options["clear_classes"] = _int_list(options["clear_classes"])
    if "storage_options" in options:
        options["storage_options"] = _storage_options(options["storage_options"])
    return options


def run(**kw: Any) -> None:
    """Super-resolve a region and date range into a zarr cube (every run_region option is an option here)."""
    _setup_logging(kw.pop("verbose"))
    client = kw.pop("scheduler")  # an address: run_region checks it before any work and connects for the run
    args = {name: kw.pop(name) for name, *_ in _ARGS}
    args["bands"] = args["bands"].split(",") if args["bands"] else None
    _run(args.pop("out"), True, client=client, **args, **run_options(kw))


def _run_signature() -> inspect.Signature:
    from srcube.pipeline.options import RunOptions

    params = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                annotation=Annotated[kind, typer.Option(help=help_)])
              for name, kind, default, help_ in _ARGS]
    params += [_cli_param(name) for name in RunOptions.model_fields if name not in _NOT_ON_CLI]
    params += [inspect.Parameter("scheduler", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
                   str | None, typer.Option(help="address of an existing Dask scheduler")]),
               inspect.Parameter("verbose", inspect.Parameter.KEYWORD_ONLY, default=False,
                                 annotation=Annotated[bool, typer.Option("--verbose", "-v")])]
    return inspect.Signature(params)


run.__signature__ = _run_signature()  # type: ignore[attr-defined]
app.command()(run)


def _int_list(text: str | None) -> list[int | str] | None:
    """"4,5,6" -> [4, 5, 6]; a part that is not an integer stays text, for run_region to reject by name."""
    if text is None:
        return None
    return [int(p) if p.strip().lstrip("-").isdigit() else p.strip() for p in text.split(",")]


@app.command()
def demo(
    out: Annotated[str, typer.Option(help="where to write the demo cube")] = "srcube-demo.zarr",
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the embedded sample region end to end (local STAC API, LocalCluster, local zarr)."""
    from srcube.pipeline.testing import sample

    _setup_logging(verbose)
    console.print(f"[bold]srcube demo[/]: sample archive, bbox {sample.DEFAULT_BBOX}, dates {sample.DEFAULT_DATES}")
    _run(out, True, bbox=sample.DEFAULT_BBOX, dates=sample.DEFAULT_DATES, catalog="sample", overwrite=True)


@app.command()
def info(cube: Annotated[str, typer.Argument(help="path or URL of an srcube cube")]) -> None:
    """Summarise a cube: status, grid, bands, dates, provenance, chunks written."""
    from srcube.pipeline.write.store import CubeStore

    store = CubeStore(cube)
    status = store.status()
    if status in ("absent", "empty", "foreign"):
        _fail(FileNotFoundError(f"{cube}: no srcube cube here ({status})"))
    if status == "complete":
        _check_present(store)
    attrs = store.attrs()
    counts, ds = None, None
    try:
        counts = store.chunk_counts("reflectance")
        ds = store.open(require_complete=False) if counts is not None else None
    except SrcubeError as exc:
        _fail(exc)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:  # zarr, on metadata it cannot parse
        _fail(_damaged(cube, f"{type(exc).__name__}: {exc}"))
    if counts is None and status != "incomplete":  # only a run stopped while writing its template lacks it
        _fail(_damaged(cube, "reflectance/zarr.json is missing"))
    table = Table(show_header=False, title=_shown(f"srcube cube {cube}", "table.title"))
    state = {"complete": "[green]complete[/]", "appending": "[yellow]appending[/] (an append is running or was cut "
             "short: shown as before it)"}.get(status, "[red]incomplete[/] (the run did not finish)")
    if counts is None or ds is None:
        table.add_row("status", f"{state}; it stopped while writing the template")
        console.print(table)
        return
    # every value below comes from the cube: shown as plain text (_shown), never as markup; a list attribute that
    # is not a list is shown as it is
    sharpened, items = _listed(attrs.get("sharpened_bands", "[]")), attrs.get("stac_item_ids", [])
    sharpened = (", ".join(map(str, sharpened)) if isinstance(sharpened, list) else str(sharpened)) or "none"
    rows: list[tuple[str, str]] = [
        ("status", state),
        ("reflectance", ", ".join(f"{k}={v}" for k, v in ds.reflectance.sizes.items()) + f" {ds.reflectance.dtype}"),
        ("chunks written", f"{counts[0]} / {counts[1]}"),
        ("crs, resolution",
         f"{attrs.get('crs')}, {attrs.get('resolution')} m (input {attrs.get('input_resolution')} m)"),
        ("bands", ", ".join(map(str, ds.band.values))),
        ("dates", ", ".join(str(t)[:10] for t in ds.time.values)),
        ("model", f"{attrs.get('model')} x{attrs.get('scale')} (weights sha256 {attrs.get('weights_sha256')})"),
        ("mode, sensor", f"{attrs.get('mode', 'single-image')}, {attrs.get('sensor', 'sentinel-2')}"),
        ("band sharpening", f"{sharpened} by "
                            f"{attrs.get('sharpen_model', 'none')} (sharpen={attrs.get('sharpen', 'n/a')}, weights "
                            f"sha256 {attrs.get('sharpen_weights_sha256', 'none')})"),
        ("catalog", f"{attrs.get('catalog')} / {attrs.get('collection')}"),
        ("bbox, dates asked", f"{attrs.get('bbox')} {attrs.get('dates')}"),
        ("items used", str(len(items)) if isinstance(items, list) else repr(items)),
        ("created", f"{attrs.get('created')} by srcube {attrs.get('srcube_version')}"),
    ]
    for k, v in rows:
        table.add_row(k, v if k == "status" else _shown(v))
    console.print(table)
    if status == "appending":
        console.print(Text.assemble(("appending", "yellow"), _shown(
            f": an append from {attrs.get('appending')} onto the {attrs.get('append_base')} time steps above is "
            "running or was cut short; run that append again (--mode append) to finish it")))
    for name, show in (("frames", _frames_table), ("windows", _windows_table)):
        if attrs.get(name):
            try:
                shown = show(json.loads(attrs[name]))
            except (ValueError, TypeError, KeyError, AttributeError) as exc:  # not the list of records srcube writes
                _fail(_unreadable_attribute(cube, name, exc))
                return
            console.print(shown)


def _listed(text: Any) -> Any:
    """A JSON list attribute as a list, or what it is when it is not one (a cube's attributes are untrusted)."""
    try:
        value = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        return text
    return value if isinstance(value, list) else text


def _unreadable_attribute(cube: str, name: str, exc: Exception) -> SrcubeError:
    from srcube.pipeline.errors import CubeAttributeError

    return CubeAttributeError(f"{cube}: the cube's {name} attribute is not the list of records srcube writes "
                              f"({type(exc).__name__}: {str(exc)[:120]}); the cube was altered: write it again (its "
                              "request, with --overwrite) or ask its sharer for the cube as srcube wrote it")


def _damaged(cube: str, why: str) -> SrcubeError:
    from srcube.pipeline.errors import CorruptCubeError

    return CorruptCubeError(f"{cube}: the cube's metadata cannot be read ({why}); the cube is damaged: write it "
                            "again (its request, with --overwrite) or restore it")


def _check_present(store: Any) -> None:
    """Refuse (exit 2) a cube that says complete but lacks chunks: zarr would read them as no data."""
    from srcube.pipeline.write.verify import check_present

    try:
        check_present(store)
    except SrcubeError as exc:
        _fail(exc)


def _complete_store(cube: str) -> Any:
    from srcube.pipeline.write.store import CubeStore

    store = CubeStore(cube)
    status = store.status()
    if status != "complete":
        _fail(FileNotFoundError(f"{cube}: no complete srcube cube here ({status})"))
    _check_present(store)
    return store


@app.command()
def export(
    cube: Annotated[str, typer.Argument(help="path or URL of a complete srcube cube")],
    cog: Annotated[Path, typer.Option("--cog", help="folder for one Cloud-Optimized GeoTIFF per date")],
    date: Annotated[list[str] | None, typer.Option("--date", help="only this day (YYYY-MM-DD; repeatable)")] = None,
) -> None:
    """Write the cube's dates as COGs (every band, the cube's CRS and transform) for QGIS/GDAL users."""
    from srcube.pipeline.errors import SrcubeError
    from srcube.pipeline.write.export import check_cog_folder, export_cogs
    from srcube.pipeline.write.verify import checked_reads

    try:  # the folder first: nothing is read for a place that cannot take the COGs
        check_cog_folder(cog)
    except SrcubeError as exc:
        _fail(exc)
    ds = _complete_store(cube).open()
    try:
        with checked_reads(cube):  # a chunk that fails its checksum: a typed error, not a traceback
            paths = export_cogs(ds, cog, dates=date, name=Path(cube.rstrip("/")).name.removesuffix(".zarr"))
    except SrcubeError as exc:
        _fail(exc)
    for path in paths:
        console.print(_shown(path), soft_wrap=True)


@app.command()
def quicklook(
    cube: Annotated[str, typer.Argument(help="path or URL of a complete srcube cube")],
    out: Annotated[Path, typer.Argument(help="the PNG to write")],
    date: Annotated[str | None, typer.Option("--date", help="the day to show (YYYY-MM-DD; default: the last)")] = None,
    size: Annotated[int, typer.Option(help="longest side of the PNG in pixels")] = 512,
) -> None:
    """A small true-colour PNG of one date, read from the cube's overviews (never a full frame in memory)."""
    from srcube.pipeline.errors import SrcubeError
    from srcube.pipeline.write.quicklook import check_max_side, check_png_target, write_quicklook
    from srcube.pipeline.write.verify import checked_reads

    try:  # the arguments first: nothing is read for a size or a place that cannot work
        check_max_side(size)
        check_png_target(out)
    except SrcubeError as exc:
        _fail(exc)
    store = _complete_store(cube)
    try:
        with checked_reads(cube):
            write_quicklook(store, out, max_side=size, date=date)
    except SrcubeError as exc:
        _fail(exc)
    console.print(_shown(out), soft_wrap=True)


@app.command()
def verify(
    cube: Annotated[str, typer.Argument(help="path or URL of a complete srcube cube")],
    json_out: Annotated[bool, typer.Option("--json", help="print the report as one JSON document")] = False,
    repair: Annotated[bool, typer.Option(
        "--repair", help="rewrite the damaged chunks from the cube's recorded request (the same bytes)")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Read every chunk of a cube and check it (present, whole, its crc32c); list the damaged ones by date and
    tile (exit 1), or rewrite them with --repair (exit 0 once the cube is sound again)."""
    from srcube.pipeline.write import verify as check

    _setup_logging(verbose)
    try:
        report = check.repair(cube) if repair else check.verify(cube)
    except SrcubeError as exc:
        _fail(exc)
        return
    if json_out:
        typer.echo(json.dumps(report.to_json()))
    else:
        console.print(Text.assemble(("verify", "bold"), _shown(
            f" {cube}: {report.chunks} chunk files ({report.inner_chunks} chunks, {report.bytes / 2**20:.1f} MB) of "
            f"{report.arrays} arrays read in {report.seconds:.2f} s")))
        for title, rows in (("damaged", report.damage), ("repaired", report.repaired)):
            if rows:
                table = Table("array", "date", "tile (px)", "problem", title=f"{title}: {len(rows)}")
                for d in rows:
                    date = d.date[:10] if d.date else f"step {d.step}" if d.step is not None else "-"
                    tile = ", ".join(f"{k} {a}-{b}" for k, (a, b) in (d.tile or {}).items()) or "-"
                    # array names and details come from the cube: plain text
                    table.add_row(_shown(d.array), _shown(date), _shown(tile),
                                  _shown(f"{d.problem} {d.part}" + (f": {d.detail}" if d.detail else "")))
                console.print(table)
        if report.ok:
            console.print("[green]sound[/]: every chunk is there and passes its checksum")
        else:
            console.print(Text.assemble(("damaged", "red"), _shown(
                f": `srcube verify {cube} --repair` rewrites them from the cube's request")), soft_wrap=True)
    if not report.ok:
        raise typer.Exit(1)


def _headers(pairs: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    token = os.environ.get("SRCUBE_STAC_TOKEN")
    if token:
        out["Authorization"] = f"Bearer {token}"
    for pair in pairs or []:
        key, sep, value = pair.partition(":")
        if not sep or not key.strip():
            raise typer.BadParameter(f"--header takes 'Name: value', got {pair!r}")
        out[key.strip()] = value.strip()
    return out


@app.command()
def publish(
    cube: Annotated[str, typer.Argument(help="path or URL of a complete srcube cube, or of an area (srcube run-area)")],
    to: Annotated[str, typer.Option("--to", help="the STAC API (with the Transactions extension) to add it to")],
    asset_href: Annotated[str | None, typer.Option(
        help="the cube's (or area folder's) address for catalog users (default: its URL, or its absolute path if "
             "local)")] = None,
    header: Annotated[list[str] | None, typer.Option(
        "--header", help="'Name: value' sent with every request (repeatable); SRCUBE_STAC_TOKEN=<token> "
                         "sends 'Authorization: Bearer <token>'")] = None,
    storage_option: Annotated[list[str] | None, typer.Option(help="KEY=VALUE fsspec option of the cube")] = None,
) -> None:
    """Add the cube's STAC Collection and Item (an area: its Collection and an Item per cell) to a STAC API
    (created, or updated when they exist)."""
    from srcube.pipeline.errors import SrcubeError
    from srcube.pipeline.write.publish import is_area, publish_area
    from srcube.pipeline.write.publish import publish as publish_cube

    so = _storage_options(storage_option)
    try:
        done = (publish_area if is_area(cube, so) else publish_cube)(cube, to, asset_href=asset_href,
                                                                     headers=_headers(header), storage_options=so)
    except SrcubeError as exc:
        _fail(exc)
    console.print(_shown(f"collection {done.collection}: {done.collection_url}"), soft_wrap=True)  # ids from the cube
    console.print(_shown(f"item {done.item}: {done.item_url}"), soft_wrap=True)


@app.command()
def catalogs() -> None:
    """List the catalog profiles."""
    from srcube.pipeline.search.catalog import describe

    table = Table("name", "url", "collection", "notes")
    for row in describe():
        table.add_row(*row)
    console.print(table)


@app.command()
def collections(catalog: Annotated[str, typer.Option(help="profile name or STAC API URL")] = "sample") -> None:
    """List the collections a catalog serves (asks the API), with the sensor srcube maps each to."""
    from srcube.pipeline.search import catalog as cat

    try:
        profile = cat.resolve_catalog(catalog)
        client = cat.open_catalog(profile)
        found = cat.collection_ids(client)
    except SrcubeError as exc:
        _fail(exc)
        return
    table = Table("collection", "sensor")
    for cid in found:
        sensor = profile.sensor_for(cid)
        table.add_row(_shown(cid), sensor.name if sensor else "-")  # as the catalog answered
    console.print(table)


@app.command("models")
def models_cmd() -> None:
    """List the models: architectures (with their default config) and the weights srcube ships."""
    # from the registry's entries and the weights' metadata and headers: nothing is built, torch is not imported
    from srcube.models import registry, weights

    table = Table("name", "type", "scales", "bands", "params", "receptive field", "weights")
    paths = weights.shipped_weights()
    shipped = {name: weights.read_meta(path) for name, path in paths.items()}
    for name in registry.list_models():
        e = registry.entry(name)
        params, reach = e.size or _built_size(name, scale=4 if 4 in e.scales else e.scales[0])
        own = sorted(w for w, meta in shipped.items() if meta.architecture == name)
        needs = ("not needed" if not e.needs_weights else
                 f"shipped: {', '.join(own)}" if own else "none shipped (train or pass a file)")
        table.add_row(name, e.kind, f"{e.scales[0]}-{e.scales[-1]}", "any", f"{params:,} (default config)",
                      f"{reach} px", needs)
    for name, meta in shipped.items():
        table.add_row(name, f"weights: {meta.architecture}", str(meta.scale), ",".join(meta.bands or ["any"]),
                      f"{weights.stored_values(paths[name]):,}",
                      f"{meta.receptive_field} px", "present" + ("" if meta.trained else " (untrained)"))
    console.print(table)


def _built_size(name: str, scale: int) -> tuple[int, int]:
    """(parameters, receptive field) of an architecture registered without its size: built (torch) to count."""
    from srcube import models

    built = models.build(name, scale=scale)
    return models.base.count_parameters(built), built.receptive_field


@app.command("export-onnx")
def export_onnx_cmd(
    model: Annotated[str, typer.Argument(help="architecture, shipped weights name or weights file")],
    out: Annotated[Path, typer.Argument(help="output .onnx file")],
    scale: Annotated[int | None, typer.Option(help="scale (baselines; weights carry their own)")] = None,
    allow_untrained: Annotated[bool, typer.Option(help="accept weights marked untrained")] = False,
) -> None:
    """Export a model to ONNX (dynamic batch, height and width) and check parity with onnxruntime at three sizes."""
    from srcube import models
    from srcube.models.onnx import export_onnx

    try:
        net = models.load_model(model, scale=scale, allow_untrained=allow_untrained)
        report = export_onnx(net, out)  # OnnxExportError says why a model cannot be exported
    except models.ModelError as exc:
        _fail(exc)
        return
    console.print(f"[bold]exported[/] {model} -> {out} ({report['bytes']:,} bytes; {report['kind']}: inputs "
                  f"{', '.join(report['inputs'])}, any batch, height and width >= {report['min_size']})")
    for check in report["checks"]:
        console.print(f"onnxruntime parity on {tuple(check['input_shape'])} -> {tuple(check['output_shape'])}: "
                      f"max abs diff {check['max_abs_diff']:.3g}")


# the commands of their own modules, after this module's (they reuse its helpers and option parameters)
from srcube.cli import area, training, view  # noqa: E402

training.register(app)
app.command("run-area")(area.run_area_cmd)
app.command("view")(view.view_cmd)


def main() -> None:  # pragma: no cover - console entry point
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
