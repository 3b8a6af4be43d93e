"""``srcube train`` and ``srcube evaluate`` (registered on the srcube command line)."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from rich.console import Console
from rich.table import Table

console = Console()
log = logging.getLogger(__name__)


def train(config: Path, *, resume: bool = False, epochs: int | None = None, export: Path | None = None) -> dict:
    """Train the model a YAML config describes; export its best weights; return the summary."""
    from training.config import load_config
    from training.trainer import Trainer

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


def evaluate(model: str, *, data: Path | None = None, image: Path | None = None, wald: int | None = None,
             bands: list[int] | None = None, out: Path = Path("srcube-eval"), limit: int | None = None,
             allow_untrained: bool = False) -> dict:
    """Metric table of ``model`` vs bicubic on a config's validation data or, with ``image`` and
    ``wald``, on one raster by the Wald protocol; quicklook PNGs under ``out``."""
    import models
    from training.evaluate import evaluate_dataset, evaluate_wald

    net = models.load_model(model, allow_untrained=allow_untrained)
    if image is not None:
        if wald is None:
            raise ValueError("--image needs --wald SCALE")
        result = evaluate_wald(net, image, scale=wald, bands=bands, quicklooks=out)
        print_table(f"Wald x{wald} on {image}", result)
    elif data is not None:
        from training.config import load_config
        from training.trainer import make_datasets

        cfg = load_config(data)
        _, val = make_datasets(cfg)
        result = evaluate_dataset(net, (val[i] for i in range(len(val))), quicklooks=out, limit=limit)  # type: ignore[arg-type]
        print_table(f"{model} on the validation data of {data} ({int(result['samples']['n'])} samples)", result)
    else:
        raise ValueError("give --data CONFIG.yaml or --image RASTER --wald SCALE")
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    console.print(f"[bold]quicklooks[/] and metrics.json in {out}")
    return result
