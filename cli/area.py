"""``srcube run-area``: an area cut into cells, one cube per cell, with a progress bar and a summary (registered on
the srcube command line by :mod:`srcube.cli.commands`)."""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

#: options of a cell's run that run-area does not take (each cell computes on its worker's threads)
NOT_FOR_AREAS = {"progress", "n_workers", "processes"}
#: run-area's own arguments, before the run options
_ARGS = [
    ("area", str, ..., "min_lon,min_lat,max_lon,max_lat, a GeoJSON Polygon/MultiPolygon (text or a .geojson/.json "
                       "file), or a Feature(Collection) of them"),
    ("dates", str, ..., "YYYY-MM-DD/YYYY-MM-DD (inclusive), or 'last 30 days'"),
    ("out", str, ..., "folder (path or fsspec URL) of the cells' cubes and the area's index"),
    ("cell_km", float, None, "cell size in km (a multiple of 0.3; default about 50)"),
    ("max_cells", int | None, None, "cells in flight at once (default: 2 per Dask worker, or 1 without --scheduler)"),
    ("cell_retries", int, 2, "tries of a failed cell after the first"),
    ("catalog", str, "sample", "profile name (see `srcube catalogs`) or STAC API URL"),
    ("collection", str | None, None, "collection id (default: the profile's)"),
    ("bands", str | None, None, "comma-separated bands, e.g. B02,B03,B04,B08"),
    ("model", str, "auto", "model name (see `srcube models`) or weights; auto: as for srcube run"),
    ("scale", int | None, None, "upscaling factor (default: the weights', or 4)"),
]


def read_area(text: str) -> Any:
    """The area as run_area takes it: a GeoJSON file's content, GeoJSON text, or the bbox text itself."""
    path = Path(text)
    if text.strip().endswith((".json", ".geojson")) and path.is_file():
        try:
            return json.loads(path.read_text())
        except ValueError as exc:
            from srcube.pipeline.errors import InvalidAreaError

            raise InvalidAreaError(f"{text} is not GeoJSON: {exc}") from None
    return text


def summary_table(summary: Any, limit: int = 20) -> Table:
    table = Table(title=f"area {escape(summary.prefix)}: {summary.cells} cells of {summary.cell_size_m} m, "
                        f"{summary.seconds:.1f} s")
    for col in ("cells", "state", "why"):
        table.add_column(col)
    for state, n in summary.counts.items():
        table.add_row(str(n), state, "")
    for result in [*summary.failed, *summary.empty][:limit]:
        table.add_row(escape(result.cell), result.state, escape(result.reason[:200]))
    hidden = len(summary.failed) + len(summary.empty) - limit
    if hidden > 0:
        table.add_row("", "", f"... {hidden} more in run-summary.json")
    return table


def run_area_cmd(**kw: Any) -> None:
    """Super-resolve an area as a grid of cells: one cube per cell under OUT and their STAC index (OUT/collection.json);
    cells already complete are skipped, so the same command resumes."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from srcube.cli.commands import _fail, _setup_logging, console, err_console, run_options
    from srcube.pipeline.area import run_area
    from srcube.pipeline.cells import DEFAULT_CELL_KM
    from srcube.pipeline.errors import SrcubeError

    verbose = kw.pop("verbose")
    _setup_logging(verbose)
    if not verbose:  # each cell's own steps stay quiet; the area's progress, warnings and errors are shown
        logging.getLogger("srcube.pipeline").setLevel(logging.WARNING)
        logging.getLogger("srcube.pipeline.area").setLevel(logging.INFO)
    as_json = kw.pop("json")
    client = kw.pop("scheduler")
    args = {name: kw.pop(name) for name, *_ in _ARGS}
    args["bands"] = args["bands"].split(",") if args["bands"] else None
    args["cell_km"] = args["cell_km"] if args["cell_km"] is not None else DEFAULT_CELL_KM
    options = run_options(kw)
    progress = Progress(TextColumn("[bold]cells"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[states]}"), TimeRemainingColumn(), console=err_console)
    task = progress.add_task("cells", total=None, states="")

    def on_start(summary: Any) -> None:
        progress.update(task, total=summary.cells)

    def on_cell(result: Any, summary: Any) -> None:
        states = " ".join(f"{k} {n}" for k, n in summary.counts.items() if n)
        progress.update(task, completed=summary.finished, states=states)

    try:
        area = read_area(args.pop("area"))
        with progress:
            summary = run_area(area, args.pop("dates"), client=client, on_cell=on_cell, on_start=on_start,
                               **args, **options)
    except SrcubeError as exc:
        _fail(exc)
        return
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/]: cells left unfinished resume when the same command runs again")
        raise typer.Exit(130) from None
    console.print(summary_table(summary))
    if as_json:
        console.print_json(json.dumps(summary.to_json()))
    console.print(f"[bold]index[/]: {escape(summary.index)}")
    if summary.interrupted:
        raise typer.Exit(130)
    if summary.failed:
        raise typer.Exit(1)


def _signature() -> inspect.Signature:
    from srcube.cli.commands import _NOT_ON_CLI, _cli_param
    from srcube.pipeline.options import RunOptions

    params = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                annotation=Annotated[kind, typer.Option(help=help_)])
              for name, kind, default, help_ in _ARGS]
    params += [_cli_param(name) for name in RunOptions.model_fields if name not in _NOT_ON_CLI | NOT_FOR_AREAS]
    params += [
        inspect.Parameter("scheduler", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
            str | None, typer.Option(help="address of the Dask scheduler the cells run on (default: threads here)")]),
        inspect.Parameter("json", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[
            bool, typer.Option("--json", help="print the summary as JSON too")]),
        inspect.Parameter("verbose", inspect.Parameter.KEYWORD_ONLY, default=False,
                          annotation=Annotated[bool, typer.Option("--verbose", "-v")])]
    return inspect.Signature(params)


run_area_cmd.__signature__ = _signature()  # type: ignore[attr-defined]
