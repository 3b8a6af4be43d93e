"""``srcube train``, ``srcube ship`` and ``srcube evaluate``, registered on the srcube command line by
:func:`register`. The training stack (torch, the datasets) is imported inside the commands: ``srcube --help`` does
not import it."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

console = Console()
log = logging.getLogger(__name__)


def train(config: Path, *, resume: bool = False, epochs: int | None = None, export: Path | None = None) -> dict:
    """Train the model a YAML config describes; export its best weights; return the summary."""
    from srcube.training.config import load_config
    from srcube.training.trainer import Trainer

    cfg = load_config(config)
    if epochs is not None:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=epochs))
    trainer = Trainer(cfg, resume=resume)
    console.print(f"[bold]train[/] {cfg.name}: {cfg.model.architecture} x{cfg.model.scale} on {cfg.data.kind} "
                  f"({len(trainer.train_ds)} samples, {len(trainer.val_ds)} validation) on {trainer.device}; "  # type: ignore[arg-type]
                  f"epoch {trainer.epoch} -> {cfg.train.epochs}; output {cfg.out_dir}")
    summary = trainer.fit()
    meta = trainer.export(export)
    table = Table("metric", "model", "bicubic", title=f"validation, best epoch {meta.metrics.get('best_epoch')}")
    for key in ("psnr", "ssim", "cpsnr", "cssim"):
        if key in meta.metrics:
            table.add_row(key, f"{meta.metrics[key]:.4f}", f"{meta.metrics[key + '_bicubic']:.4f}")
    console.print(table)
    console.print(f"[bold]weights[/]: {export or cfg.out_dir / (cfg.model.name or cfg.name)}.safetensors "
                  f"(sha256 {meta.sha256[:16]}...), logs {cfg.out_dir}/metrics.csv and {cfg.out_dir}/tb")
    return {"summary": summary, "metrics": meta.metrics}


def print_table(title: str, result: dict[str, dict[str, float]]) -> None:
    table = Table("metric", "model", "bicubic", "model - bicubic", title=title)
    for key, value in result["model"].items():
        base = result["bicubic"][key]
        table.add_row(key, f"{value:.4f}", f"{base:.4f}", f"{value - base:+.4f}")
    console.print(table)


def _json_path(out: Path) -> Path:
    """``--out``: a ``.json`` file, or a folder that gets ``metrics.json``."""
    if out.suffix == ".json":
        out.parent.mkdir(parents=True, exist_ok=True)
        return out
    out.mkdir(parents=True, exist_ok=True)
    return out / "metrics.json"


def evaluate(model: str, *, data: Path | None = None, image: Path | None = None, wald: int | None = None,
             bands: list[int] | None = None, out: Path = Path("srcube-eval"), limit: int | None = None,
             allow_untrained: bool = False, split: str | None = None, task: str | None = None,
             scale: int | None = None, robustness: bool = True, max_side: int | None = None,
             report: bool = False) -> dict:
    """Evaluate ``model`` against bicubic, in one of three ways:

    * ``split`` + ``task``: the Wald protocol over every scene of a split (validation for selection;
      test: ``report=True`` writes ``NAME.test.json`` next to the weights, once), per scene and band with
      intervals, and the robustness table; JSON to ``out``;
    * ``image`` + ``wald``: the Wald protocol on one raster (own-peak PSNR with intervals, quicklook);
    * ``data``: a training config's validation samples (PSNR against 1.0, as training logs it).
    """
    from srcube import models
    from srcube.training import evaluation as ev

    if split is not None:
        if split not in ("validation", "test"):
            raise ValueError(f"--split is validation (model selection) or test (reported once), not {split!r}")
        if task not in ("s2-10m", "s2-20m"):
            raise ValueError(f"--split needs --task s2-10m or s2-20m (band sharpeners), not {task!r}; PROBA-V "
                             "multi-frame evaluation over splits is not implemented")
        if report:
            if split != "test":
                raise ValueError("--report writes the test report: use it with --split test")
            spec, _ = models.resolve(model, scale=scale, allow_untrained=allow_untrained)
            if spec.weights is None:
                raise ValueError(f"--report needs weights (a weights file or shipped weights name), not {model!r}")
            path = ev.write_test_report(spec.weights, task, max_side=max_side, allow_untrained=allow_untrained)
            doc = json.loads(path.read_text())
            console.print(f"[bold]test report[/] written to {path}")
        else:
            net = models.load_model(model, scale=scale, allow_untrained=allow_untrained)
            doc = ev.evaluate_split(net, task, split, robustness=robustness, max_side=max_side, name=model).to_json()
        console.print(ev.split_markdown(doc), markup=False, highlight=False, soft_wrap=True)
        target = _json_path(out)
        target.write_text(json.dumps(doc, indent=1))
        console.print(f"[bold]metrics[/] in {target}")
        return doc
    if image is not None:
        if wald is None:
            raise ValueError("--image needs --wald SCALE")
        net = models.load_model(model, scale=wald, allow_untrained=allow_untrained)
        data_ = ev.image_data(image, multiple=wald, bands=bands)
        res = ev.evaluate_wald(net, data_, wald, quicklook=out / f"{data_.name}-wald-x{wald}.png")
        doc = {"model": model, **res.to_json(), "summary": ev.summarize([res]), "peak_convention": ev.PEAK_CONVENTION}
        console.print(f"Wald x{wald} on {image} (window row, col, h, w = {res.window}; degradation {res.degradation}). "
                      f"{ev.PEAK_CONVENTION}.", markup=False, highlight=False, soft_wrap=True)
        console.print(ev.rows_markdown(doc["rows"]) + "\n\n" + ev.summary_markdown(doc["summary"]), markup=False,
                      highlight=False, soft_wrap=True)
        target = _json_path(out)
        target.write_text(json.dumps(doc, indent=1))
        console.print(f"[bold]quicklook[/] and metrics.json in {out}")
        return doc
    if data is None:
        raise ValueError("give --split SPLIT --task TASK, --image RASTER --wald SCALE, or --data CONFIG.yaml")
    from srcube.training.config import load_config
    from srcube.training.evaluate import evaluate_dataset
    from srcube.training.trainer import make_datasets

    net = models.load_model(model, allow_untrained=allow_untrained)
    cfg = load_config(data)
    _, val = make_datasets(cfg)
    result = evaluate_dataset(net, (val[i] for i in range(len(val))), quicklooks=out, limit=limit)  # type: ignore[arg-type]
    print_table(f"{model} on the validation data of {data} ({int(result['samples']['n'])} samples)", result)
    (_json_path(out)).write_text(json.dumps(result, indent=2))
    console.print(f"[bold]quicklooks[/] and metrics.json in {out}")
    return result


def train_cmd(
    config: Annotated[Path, typer.Argument(help="training config (YAML), e.g. training/configs/s2-sisr-x4.yaml")],
    resume: Annotated[bool, typer.Option(help="continue from the run's last checkpoint")] = False,
    epochs: Annotated[int | None, typer.Option(help="override train.epochs")] = None,
    export: Annotated[Path | None, typer.Option(help="where to write the weights (without suffix)")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Train a model from a YAML config (CPU here, CUDA when present); export its best weights."""
    from srcube import models
    from srcube.cli.commands import _fail, _setup_logging
    from srcube.training.config import ConfigError
    from srcube.training.trainer import CheckpointError

    _setup_logging(verbose)
    logging.getLogger("srcube.training").setLevel(logging.INFO)
    try:
        train(config, resume=resume, epochs=epochs, export=export)
    except (ConfigError, CheckpointError, models.ModelConfigError, FileNotFoundError) as exc:
        _fail(exc)


def ship_cmd(
    config: Annotated[Path, typer.Argument(help="the training config the weights were trained with")],
    limit: Annotated[list[str] | None, typer.Option("--limit", help="a limit of the weights for the card")] = None,
    overwrite_report: Annotated[bool, typer.Option(help="write the test report again (correcting the report "
                                                        "itself; the test split is reported once)")] = False,
) -> None:
    """Ship trained weights: into models/weights, evaluated once on the test split, speed measured, card written."""
    from srcube.cli.commands import _fail
    from srcube.training.config import ConfigError
    from srcube.training.ship import ship

    try:
        out = ship(config, limits=list(limit or []), overwrite_report=overwrite_report)
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError) as exc:
        _fail(exc)
        return
    console.print(f"[bold]shipped[/] {out['weights']} (report {out['report']}; {out['speed']['mpix_per_s']} Mpix/s)")


def evaluate_cmd(
    model: Annotated[str, typer.Option(help="model name, shipped weights or weights file")],
    split: Annotated[str | None, typer.Option(
        help="validation (model selection) or test (reported once): every scene of the split, by the Wald protocol")
    ] = None,
    task: Annotated[str | None, typer.Option(help="with --split: s2-10m or s2-20m (band sharpeners)")] = None,
    scale: Annotated[int | None, typer.Option(help="with --split: scale of a baseline (weights carry theirs)")] = None,
    robustness: Annotated[bool, typer.Option(help="with --split: the 12-degradation robustness table")] = True,
    max_side: Annotated[int | None, typer.Option(help="with --split: evaluate at most this many pixels a side")] = None,
    report: Annotated[bool, typer.Option(
        help="with --split test: write NAME.test.json next to the weights (once per weights)")] = False,
    data: Annotated[Path | None, typer.Option(help="training config whose validation data to use")] = None,
    image: Annotated[Path | None, typer.Option(help="any GeoTIFF/COG/zarr for the Wald protocol")] = None,
    wald: Annotated[int | None, typer.Option(help="Wald protocol scale (with --image)")] = None,
    bands: Annotated[str | None, typer.Option(help="1-based raster bands of --image, e.g. 1,2,3")] = None,
    out: Annotated[Path, typer.Option(help="folder for quicklook PNGs and metrics.json, or a .json file")
                   ] = Path("srcube-eval"),
    limit: Annotated[int | None, typer.Option(help="evaluate at most this many samples")] = None,
    allow_untrained: Annotated[bool, typer.Option(help="accept weights marked untrained")] = False,
) -> None:
    """Evaluate a model against bicubic: over a split of real scenes (--split --task: PSNR against each band's
    own peak, SSIM, 95 % block-bootstrap intervals, opensr-test consistency and correctness, robustness
    table), on one raster (--image --wald), or on a training config's validation data (--data)."""
    from srcube import models
    from srcube.cli.commands import _fail
    from srcube.training.config import ConfigError

    try:
        evaluate(model, data=data, image=image, wald=wald, bands=[int(b) for b in bands.split(",")] if bands else None,
                 out=out, limit=limit, allow_untrained=allow_untrained, split=split, task=task, scale=scale,
                 robustness=robustness, max_side=max_side, report=report)
    except (ConfigError, models.ModelError, ValueError, FileNotFoundError, FileExistsError) as exc:
        _fail(exc)


def register(app: typer.Typer) -> None:
    """Add ``train``, ``ship`` and ``evaluate`` to the srcube command line."""
    app.command("train")(train_cmd)
    app.command("ship")(ship_cmd)
    app.command("evaluate")(evaluate_cmd)
