"""Model cards for shipped weights, written from their metadata (nothing typed by hand can drift)."""

from __future__ import annotations

import json
from pathlib import Path

from models.weights import WeightsMeta, read_meta

_PAIRS = (("psnr", "PSNR (dB)"), ("ssim", "SSIM"), ("cpsnr", "cPSNR (dB)"), ("cssim", "cSSIM"))


def card(meta: WeightsMeta, limits: list[str], evaluation: dict[str, dict[str, dict[str, float]]] | None = None) -> str:
    """Markdown: what the weights are, the data and recipe, validation metrics vs bicubic, limits."""
    t, m = meta.training, meta.metrics
    recipe = t.get("recipe", {})
    kind = ("band-agnostic (one band at a time, any 10 m band)" if not meta.bands
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
        f"Training window (row/col fractions of each source): {t.get('train_window')}; validation window: "
        f"{t.get('val_window')}; validation sources: {t.get('val_sources') or 'the same sources, other area'}.",
        "",
        "## Recipe",
        "",
        "```json",
        json.dumps({k: recipe.get(k) for k in ("model", "data", "train", "seed")}, indent=1, default=str),
        "```",
        "",
        f"Reproduce: `srcube train training/configs/{recipe.get('name', meta.name)}.yaml`.",
        "",
        f"## Validation (best epoch {m.get('best_epoch', '?')}, spatially separate area)",
        "",
        "| metric | model | bicubic | gain |",
        "|---|---|---|---|",
        *rows,
    ]
    if evaluation:
        lines += ["", "## Further evaluation", ""]
        for title, res in evaluation.items():
            lines += [f"**{title}**", "", "| metric | model | bicubic |", "|---|---|---|"]
            lines += [f"| {k} | {v:.4f} | {res['bicubic'][k]:.4f} |" for k, v in res["model"].items()]
            lines.append("")
    lines += ["", "## Limits", "", *[f"- {x}" for x in limits], "", "## Licence", "", meta.licence, ""]
    return "\n".join(lines)


def write_card(weights: str | Path, limits: list[str],
               evaluation: dict[str, dict[str, dict[str, float]]] | None = None) -> Path:
    meta = read_meta(weights)
    path = Path(weights).with_suffix("").with_suffix(".md")
    path.write_text(card(meta, limits, evaluation))
    return path
