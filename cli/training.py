"""``srcube train``, ``srcube ship`` and ``srcube evaluate``, registered on the srcube command line by
:func:`register`. The training stack (torch, the datasets) is imported inside the commands: ``srcube --help`` does
not import it."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from srcube.training.config import Config

console = Console()
log = logging.getLogger(__name__)


def _config(config: Path, *, epochs: int | None = None, output: Path | None = None, amp: str | None = None) -> Config:
    """The training config with the command line's overrides."""
    from srcube.training.config import load_config, validate

    cfg = load_config(config)
    train_cfg = cfg.train
    if epochs is not None:
        train_cfg = dataclasses.replace(train_cfg, epochs=epochs)
    if amp is not None:
        train_cfg = dataclasses.replace(train_cfg, amp=amp)
    cfg = dataclasses.replace(cfg, train=train_cfg)
    if output is not None:  # a path of the command line: relative to the working directory, not the repository
        cfg = dataclasses.replace(cfg, output=str(output.expanduser().absolute()))
    validate(cfg)
    return cfg


def train(config: Path, *, resume: bool = False, epochs: int | None = None, export: Path | None = None,
          output: Path | None = None, amp: str | None = None, backend: str = "auto",
          auto_resume: bool = False) -> dict:
    """Train the model a YAML config describes; export its best weights; return the summary.

    As one process, or as one of the processes torchrun (or ``srcube train --nproc``) started: then every process
    trains its share of each global batch in one process group and rank 0 alone writes and exports (the others
    return an empty ``metrics``). ``auto_resume``: resume when the output folder has a checkpoint, else start
    (what a restarted Kubernetes pod needs)."""
    from srcube.training import distributed
    from srcube.training.trainer import Trainer

    cfg = _config(config, epochs=epochs, output=output, amp=amp)
    if auto_resume:
        resume = resume or (cfg.out_dir / "checkpoints" / "last.pt").exists()
    with distributed.process_group(distributed.world_from_env(), backend, cfg.device) as world:
        trainer = Trainer(cfg, resume=resume, world=world)
        if world.main:
            ranks = f" x {world.size} processes ({world.backend})" if world.launched else ""
            console.print(f"[bold]train[/] {cfg.name}: {cfg.model.architecture} x{cfg.model.scale} on {cfg.data.kind} "
                          f"({len(trainer.train_ds)} samples, {len(trainer.val_ds)} validation) on "  # type: ignore[arg-type]
                          f"{trainer.device}{ranks}; epoch {trainer.epoch} -> {cfg.train.epochs}; output {cfg.out_dir}")
        try:
            summary = trainer.fit()
        finally:
            trainer.close()
    if not world.main:
        return {"summary": summary, "metrics": {}}
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
    auto_resume: Annotated[bool, typer.Option(
        help="continue from the run's last checkpoint when there is one, else start (restarted Jobs)")] = False,
    epochs: Annotated[int | None, typer.Option(help="override train.epochs")] = None,
    output: Annotated[Path | None, typer.Option(
        help="override the config's output folder (checkpoints, logs, weights); may hold {name}")] = None,
    amp: Annotated[str | None, typer.Option(
        help="override train.amp: auto (bf16 on CUDA, off on a CPU), bf16 (CUDA or CPU), fp16 (CUDA, loss "
             "scaling) or off")] = None,
    nproc: Annotated[int | None, typer.Option(
        help="train data-parallel on this many processes of this machine (one per GPU on CUDA); several "
             "machines: torchrun --nnodes ... -m srcube.cli train")] = None,
    backend: Annotated[str, typer.Option(
        help="process-group backend of a data-parallel run: auto (nccl on CUDA, gloo on CPUs), nccl or gloo")
    ] = "auto",
    export: Annotated[Path | None, typer.Option(help="where to write the weights (without suffix)")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Train a model from a YAML config (CPU here, CUDA when present); export its best weights. Data-parallel
    with --nproc N, or as each process of `torchrun --nproc-per-node N -m srcube.cli train CONFIG`: the config's
    batch is the global batch, shared out over the processes."""
    from srcube import models
    from srcube.cli.commands import _fail, _setup_logging
    from srcube.training.config import ConfigError
    from srcube.training.trainer import CheckpointError

    _setup_logging(verbose)
    main_rank = os.environ.get("RANK", "0") == "0"  # the other ranks of a data-parallel run log warnings only
    logging.getLogger("srcube.training").setLevel(logging.INFO if main_rank else logging.WARNING)
    try:
        if nproc is not None:
            code = _launch(config, nproc, resume=resume, auto_resume=auto_resume, epochs=epochs, output=output,
                           amp=amp, backend=backend, export=export, verbose=verbose)
            if code:
                raise typer.Exit(code)
            return
        train(config, resume=resume, epochs=epochs, export=export, output=output, amp=amp, backend=backend,
              auto_resume=auto_resume)
    except (ConfigError, CheckpointError, models.ModelConfigError, FileNotFoundError) as exc:
        _fail(exc)


def _launch(config: Path, nproc: int, *, resume: bool, auto_resume: bool, epochs: int | None, output: Path | None,
            amp: str | None, backend: str, export: Path | None, verbose: bool) -> int:
    """``srcube train --nproc N``: the config checked once here, then N processes of this command without --nproc
    (:func:`srcube.training.distributed.launch`); the exit code of the first that fails."""
    from srcube.training import distributed

    if "WORLD_SIZE" in os.environ:
        raise distributed.DistributedConfigError(
            "--nproc starts the processes of a data-parallel run, and this process is one already (WORLD_SIZE is "
            "set: torchrun or --nproc started it); leave --nproc out under torchrun")
    cfg = _config(config, epochs=epochs, output=output, amp=amp)
    distributed.check_batch(cfg.train.batch_size, nproc)
    if backend not in distributed.BACKENDS:
        raise distributed.DistributedConfigError(
            f"--backend {backend!r} is not one of {', '.join(distributed.BACKENDS)}")
    argv = [str(config.absolute()), "--backend", backend]
    for flag, value in (("--epochs", epochs), ("--output", output and output.absolute()), ("--amp", amp),
                        ("--export", export and export.absolute())):
        if value is not None:
            argv += [flag, str(value)]
    argv += ["--resume"] * resume + ["--auto-resume"] * auto_resume + ["--verbose"] * verbose
    return distributed.launch(nproc, [sys.executable, "-m", "srcube.cli", "train", *argv])


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
