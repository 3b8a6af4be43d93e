"""Model cards for shipped weights, written from their metadata (nothing typed by hand can drift)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from models.weights import WeightsMeta, read_meta
from training.config import windows_disjoint

_PAIRS = (("psnr", "PSNR (dB)"), ("ssim", "SSIM"), ("cpsnr", "cPSNR (dB)"), ("cssim", "cSSIM"))


def _separation(t: dict) -> str:
    """How the validation data is kept apart from the training data, as the metadata says."""
    val, train = t.get("val_sources") or [], t.get("sources") or []
    if val and not set(val) & set(train):
        return "other scenes than training"
    if windows_disjoint(t.get("train_window"), t.get("val_window")):
        return "spatially separate area"
    return "NOT separate from the training area"


def _split_text(t: dict) -> str:
    if t.get("val_sources"):
        return f"Training sources: {t.get('sources')}; validation sources: {t.get('val_sources')}."
    return (f"Training window (row/col fractions of each source): {t.get('train_window')}; validation window: "
            f"{t.get('val_window')} of the same sources.")


def _history_lines(history_csv: str | Path) -> list[str]:
    """The run's validation metrics per epoch (its metrics.csv) as a markdown table."""
    with open(history_csv) as f:
        rows = list(csv.DictReader(f))
    keys = [k for k, _ in _PAIRS if rows and k in rows[0]]
    head = ["epoch", *keys, *(f"{k} bicubic" for k in keys if f"{k}_bicubic" in rows[0])]
    lines = ["", "## Validation per epoch", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        vals = [r["epoch"], *(f"{float(r[k]):.4f}" for k in keys),
                *(f"{float(r[k + '_bicubic']):.4f}" for k in keys if f"{k}_bicubic" in r)]
        lines.append("| " + " | ".join(vals) + " |")
    return lines


def card(meta: WeightsMeta, limits: list[str], evaluation: dict[str, dict[str, dict[str, float]]] | None = None,
         history_csv: str | Path | None = None) -> str:
    """Markdown: what the weights are, the data and recipe, validation metrics vs bicubic, limits."""
    t, m = meta.training, meta.metrics
    recipe = t.get("recipe", {})
    sensors = ", ".join(t.get("sensors", [])) or "any sensor"
    kind = (f"band-agnostic (one band at a time, any band of {sensors})" if not meta.bands
            else "bands " + ", ".join(meta.bands))
    rows = [f"| {label} | {m[key]:.4f} | {m[key + '_bicubic']:.4f} | {m[key] - m[key + '_bicubic']:+.4f} |"
            for key, label in _PAIRS if key in m and key + "_bicubic" in m]
    lines = [
        f"# {meta.name}",
        "",
        f"`{meta.architecture}` x{meta.scale}, {kind}; "
        f"receptive field {meta.receptive_field} input pixels; sensors: {', '.join(t.get('sensors', [])) or 'any'}.",
        f"Trained by srcube {meta.srcube_version} on {t.get('device', '?')} "
        f"({t.get('epochs', '?')} epochs, {t.get('steps', '?')} steps); sha256 `{meta.sha256}`.",
        "",
        "## Data",
        "",
        str(t.get("data", "")),
        "",
        _split_text(t),
        "",
        "## Recipe",
        "",
        "```json",
        json.dumps({k: recipe.get(k) for k in ("model", "data", "train", "seed")}, indent=1, default=str),
        "```",
        "",
        f"Reproduce: `srcube train training/configs/{recipe.get('name', meta.name)}.yaml`.",
        "",
        f"## Validation (best epoch {m.get('best_epoch', '?')}, {_separation(t)})",
        "",
        "| metric | model | bicubic | gain |",
        "|---|---|---|---|",
        *rows,
    ]
    if history_csv is not None:
        lines += _history_lines(history_csv)
    if evaluation:
        lines += ["", "## Further evaluation", ""]
        for title, res in evaluation.items():
            lines += [f"**{title}**", "", "| metric | model | bicubic |", "|---|---|---|"]
            lines += [f"| {k} | {v:.4f} | {res['bicubic'][k]:.4f} |" for k, v in res["model"].items()]
            lines.append("")
    lines += ["", "## Limits", "", *[f"- {x}" for x in limits], "", "## Licence", "", meta.licence, ""]
    return "\n".join(lines)


def write_card(weights: str | Path, limits: list[str],
               evaluation: dict[str, dict[str, dict[str, float]]] | None = None,
               history_csv: str | Path | None = None) -> Path:
    meta = read_meta(weights)
    path = Path(weights).with_suffix("").with_suffix(".md")
    path.write_text(card(meta, limits, evaluation, history_csv))
    return path
