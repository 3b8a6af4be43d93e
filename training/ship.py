"""Ship trained weights as srcube's own product: copy them into ``models/weights``, evaluate them once on
the test split of their task (:func:`training.evaluation.write_test_report`), measure their speed on this
machine, and write their model card from the metadata, the run's validation history and that report
(nothing typed by hand that can drift). ``srcube ship CONFIG`` runs it after ``srcube train CONFIG``.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from srcube import models
from srcube.models.weights import SHIPPED_DIR, read_meta
from srcube.training.card import card_lines_for_scenes, history_lines, probav_section, test_split_section
from srcube.training.config import load_config
from srcube.training.datasets.scenes import scenes


def speed(weights: str | Path, *, size: int = 256, repeats: int = 3, threads: int = 2) -> dict[str, Any]:
    """Output megapixels per second of the ready-to-run weights on one in-memory tile, ``threads`` torch
    threads (median of ``repeats`` after a warm-up): spatial output pixels with all the model's bands."""
    model = models.load_model(str(weights)).eval()
    torch.set_num_threads(threads)
    s, c = model.scale, max(1, model.channels)
    g = torch.Generator().manual_seed(0)
    if model.multi_frame:
        n = int(getattr(getattr(model, "inner", model), "n_views", 8))
        size = min(size, 128)
        args: tuple[torch.Tensor, ...] = (torch.rand(1, n, c, size, size, generator=g) * 0.3,
                                          torch.ones(1, n, size, size))
    elif getattr(getattr(model, "inner", model), "kind", "") == "sharpen":
        gc = int(getattr(getattr(model, "inner", model), "guide_channels", 4))
        args = (torch.rand(1, c, size, size, generator=g) * 0.3,
                torch.rand(1, gc, size * s, size * s, generator=g) * 0.3)
    else:
        args = (torch.rand(1, c, size, size, generator=g) * 0.3,)
    times = []
    with torch.inference_mode():
        model(*args)
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(*args)
            times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    out_px = (size * s) ** 2
    return {"threads": threads, "tile": size, "seconds": round(t, 4), "mpix_per_s": round(out_px / t / 1e6, 3),
            "bands": c, "mvalues_per_s": round(out_px * c / t / 1e6, 3), "cpu_count": os.cpu_count()}


def ship(config: str | Path, *, limits: list[str] | None = None, overwrite_report: bool = False,
         weights_dir: Path = SHIPPED_DIR) -> dict[str, Any]:
    """Copy the trained weights of ``config`` (``runs/NAME/NAME.*``, as ``srcube train`` exports them) into
    ``weights_dir``, write their test report, measure their speed and write their card. Returns a summary."""
    from srcube.training.evaluation.report import write_test_report

    cfg = load_config(config)
    name = cfg.model.name or cfg.name
    run = cfg.out_dir
    src = run / name
    for suffix in (".safetensors", ".json"):
        if not src.with_suffix(suffix).exists():
            raise FileNotFoundError(f"{src.with_suffix(suffix)} is missing: run `srcube train {config}` first")
    if not cfg.data.task:
        raise ValueError(f"{config}: only recipes trained on the splits by place (data.task) can be shipped")
    weights_dir.mkdir(parents=True, exist_ok=True)
    dst = weights_dir / name
    for suffix in (".safetensors", ".json"):
        shutil.copyfile(src.with_suffix(suffix), dst.with_suffix(suffix))
    from srcube.training.evaluation.report import report_path

    report = report_path(dst)
    reported = report.exists() and json.loads(report.read_text()).get("weights_sha256") == read_meta(dst.with_suffix(
        ".json")).sha256
    if overwrite_report or not reported:  # the test split is reported once per weights: shipping again keeps it
        report = write_test_report(dst.with_suffix(".json"), cfg.data.task, overwrite=overwrite_report)
    fast = speed(dst.with_suffix(".json"))
    history = run / "metrics.csv"
    text = model_card(dst.with_suffix(".json"), limits or [], history if history.exists() else None, fast)
    dst.with_suffix(".md").write_text(text)
    return {"weights": str(dst.with_suffix(".safetensors")), "report": str(report), "speed": fast}


def refresh_card(weights: str | Path, *, limits_add: Sequence[str] = ()) -> Path:
    """Rewrite the generated parts of an existing card from the current splits and test report, where the training
    run (its metrics history) is not at hand: the splits by place and the "Test split" section; ``limits_add``
    lines are appended to its limits. The rest of the card (recipe, validation, speed) stays as it was written."""
    from srcube.training.card import read_test_report

    meta = read_meta(weights)
    card_path = Path(weights).with_suffix(".md")
    text = card_path.read_text()
    task = meta.training.get("recipe", {}).get("data", {}).get("task", "")
    report = read_test_report(weights, meta)
    if report is None:
        raise FileNotFoundError(f"{weights}: no test report for these weights (write it first)")
    splits = card_lines_for_scenes(task)
    start = text.index(splits[0].split(":")[0])
    end = text.index("\n\n## ", start)
    text = text[:start] + "\n".join(splits).rstrip("\n") + text[end:]
    kind = models.entry(meta.architecture).kind
    section = "\n".join(probav_section(report) if kind == "multi-frame" else test_split_section(report))
    start = text.index("## Test split")
    end = text.index("\n## ", start + 1)
    text = text[:start] + section + "\n" + text[end:]
    if limits_add:
        start = text.index("## Limits")
        end = text.index("\n\n## ", start)
        text = text[:end] + "".join(f"\n- {x}" for x in limits_add) + text[end:]
    card_path.write_text(text)
    return card_path


def model_card(weights: str | Path, limits: list[str], history_csv: str | Path | None,
               speed_figures: dict[str, Any]) -> str:
    """The card of shipped weights: what they are, data (the places of each split), recipe, validation per
    epoch, the test split (from the report, once), speed on this machine, limits, licence."""
    from srcube.training.card import read_test_report

    meta = read_meta(weights)
    t = meta.training
    recipe = t.get("recipe", {})
    task = recipe.get("data", {}).get("task", "")
    report = read_test_report(weights, meta)
    kind = models.entry(meta.architecture).kind
    what = {"single-image": "single-image super-resolution", "multi-frame": "multi-frame super-resolution",
            "sharpen": "band sharpening"}.get(kind, kind)
    bands = ("band-agnostic (one band at a time)" if not meta.bands else "bands " + ", ".join(meta.bands))
    if kind == "sharpen":
        guide = meta.config.get("guide_bands") or []
        bands = f"sharpens {', '.join(meta.bands or [])} with {', '.join(guide)} as guide"
    consistent = ""
    if meta.config.get("project"):
        from srcube.models.psf import PROJECTION_PSF, SENSOR_PSF

        sensor = str(meta.config["project"])
        sigma = meta.config.get("project_sigma") or PROJECTION_PSF.get(sensor)
        consistent = (f" It ends in the consistency projection (`models.consistency`): its output, degraded with a "
                      f"Gaussian PSF of sigma {sigma:.3f} x scale and point sampling, gives back its input. That PSF "
                      f"is narrower than {sensor}'s nominal one ({SENSOR_PSF.get(sensor, 0):.3f} x scale, what the "
                      "Wald protocol degrades with) by choice: a projection with a PSF wider than the data's "
                      "overshoots and amplifies noise, a narrower one only restores less; it was chosen on the "
                      "training and validation places over the robustness rows (`bench/projection_psf.py`), and "
                      "the robustness table below is the test split's.")
    lines = [
        f"# {meta.name}", "",
        f"`{meta.architecture}` x{meta.scale}, {what}, {bands}; receptive field {meta.receptive_field} input pixels; "
        f"sensors: {', '.join(t.get('sensors', [])) or 'any'}.{consistent}",
        f"Trained by srcube {meta.srcube_version} on {t.get('device', '?')} ({t.get('epochs', '?')} epochs, "
        f"{t.get('steps', '?')} steps); sha256 `{meta.sha256}`.", "",
        "## Data", "", str(t.get("data", "")), "",
        *card_lines_for_scenes(task), "",
        "## Recipe", "", "```json",
        json.dumps({k: recipe.get(k) for k in ("model", "data", "train", "seed")}, indent=1, default=str), "```", "",
        f"Reproduce: `srcube train training/configs/{recipe.get('name', meta.name)}.yaml` then "
        f"`srcube ship training/configs/{recipe.get('name', meta.name)}.yaml`.", "",
    ]
    if history_csv is not None:
        lines += [f"## Validation (model selection; best epoch {meta.metrics.get('best_epoch', '?')})", "",
                  *history_lines(history_csv), ""]
    if report is not None:
        lines += probav_section(report) if kind == "multi-frame" else test_split_section(report)
        lines.append("")
    f = speed_figures
    lines += ["## Speed", "",
              f"{f['mpix_per_s']} Mpix/s of output ({f['mvalues_per_s']} M values/s over its {f['bands']} band(s)) on "
              f"{f['threads']} CPU threads of this machine ({f['cpu_count']} cores), one {f['tile']} px input tile, "
              f"median of 3 after a warm-up ({f['seconds']} s per tile; `training.ship.speed`).", "",
              "## Limits", "", *[f"- {x}" for x in limits], "", "## Licence", "", meta.licence, ""]
    return "\n".join(lines)


def task_scenes_text(task: str) -> str:
    """One line per split: the scenes and their places."""
    out = []
    for split in ("train", "validation", "test"):
        out.append(f"{split}: " + "; ".join(f"{s.name} ({s.place})" for s in scenes(task, split)))
    return "\n".join(out)
