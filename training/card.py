"""Model cards for shipped weights, written from their metadata and their test report (nothing typed by
hand can drift): :func:`card` / :func:`write_card`, and the README's table of test-split results
(:func:`test_table_markdown`, from the ``NAME.test.json`` reports :func:`training.evaluation.write_test_report`
writes next to the weights)."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from srcube.models.weights import SHIPPED_DIR, WeightsMeta, read_meta
from srcube.training.config import windows_disjoint
from srcube.training.evaluation.report import (
    REPORT_FORMAT,
    report_path,
    robustness_markdown,
    rows_markdown,
    scenes_markdown,
    summary_markdown,
)

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


def read_test_report(weights: str | Path, meta: WeightsMeta | None = None) -> dict[str, Any] | None:
    """The weights' ``NAME.test.json``, or None when they have none; raises ValueError for a report of
    other weights (its sha256 differs) or of an unknown format."""
    path = report_path(weights)
    if not path.exists():
        return None
    doc: dict[str, Any] = json.loads(path.read_text())
    meta = meta or read_meta(weights)
    if doc.get("format") != REPORT_FORMAT:
        raise ValueError(f"{path}: unknown report format {doc.get('format')!r}; expected {REPORT_FORMAT}")
    if doc.get("weights_sha256") != meta.sha256:
        raise ValueError(f"{path} reports other weights (sha256 {str(doc.get('weights_sha256'))[:16]}..., the weights "
                         f"are {meta.sha256[:16]}...): evaluate these weights on the test split again")
    return doc


def test_split_section(report: Mapping[str, Any]) -> list[str]:
    """The card's "Test split" section from a test report: scenes named, per scene and band with
    intervals, the summary and the robustness table."""
    d = report["degradation"]
    names = ", ".join(f"{s['name']} ({s['place']})" for s in report["scenes"])
    lines = ["## Test split", "",
             f"Task `{report['task']}`, reported once for these weights (srcube {report['srcube_version']}, "
             f"{report.get('created', '')}): {names}. Wald protocol: degradation {d['label']}, super-resolved back "
             f"x{report['scale']} and compared with the original. {report['peak_convention']}. Intervals: 95 % block "
             f"bootstrap ({report['bootstrap']['block']} px blocks, {report['bootstrap']['resamples']} draws).", "",
             scenes_markdown(report["scenes"]), "", rows_markdown(report["rows"]), "",
             summary_markdown(report["summary"])]
    for key in ("summary_hpf", "summary_projection"):
        if report.get(key):
            lines += ["", summary_markdown(report[key])]
    if report.get("robustness"):
        lines += ["", "Robustness: the same scenes under other degradations (Gaussian PSF sigma as a fraction of "
                  "the scale, point or area decimation, noise in reflectance, @ the sampling grid shifted by that "
                  "many HR pixels):", "",
                  robustness_markdown(report["robustness"])]
    if report.get("skipped"):
        lines += ["", "Not evaluated: " + "; ".join(f"{s['scene']} ({s['reason']})" for s in report["skipped"]) + "."]
    return lines


_TABLE_HEAD = ("| weights | task | test scenes | PSNR dB, own peak (bicubic) | gain vs bicubic dB [95% CI] | "
               "worst scene-band dB | lowest robustness row dB |\n|---|---|---|---|---|---|---|")


def _ci(ci: Any) -> str:
    return "[" + ", ".join(f"{v:+.2f}" for v in ci) + "]" if ci else "n/a"


def test_table_markdown(weights_dir: str | Path = SHIPPED_DIR) -> str:
    """The README's table of test-split results: one row per weights in ``weights_dir`` that has a
    ``NAME.test.json`` (header only while none has)."""
    lines = [_TABLE_HEAD]
    for meta_path in sorted(Path(weights_dir).glob("*.json")):
        if meta_path.name.endswith(".test.json"):
            continue
        report = read_test_report(meta_path)
        if report is None:
            continue
        s = report["summary"]
        w = s.get("worst") or {}
        if s.get("metric") == "cPSNR":  # multi-frame PROBA-V: the Kelvins metric against the Kelvins baseline
            names = ", ".join(x["scene"] for x in report["scenes"])
            model = sum(x["cpsnr_model"] * x["targets"] for x in report["scenes"]) / max(1, s["n"])
            base = sum(x["cpsnr_kelvins_baseline"] * x["targets"] for x in report["scenes"]) / max(1, s["n"])
            lines.append(
                f"| `{report['weights']}` | {report['task']} | {names} | cPSNR {model:.2f} (Kelvins baseline "
                f"{base:.2f}) | {s['mean_gain']:+.2f} {_ci(s['mean_gain_ci'])} | {w.get('gain', float('nan')):+.2f} "
                f"({w.get('scene')}) | Wald Kelvins score {s['wald_kelvins_score']:.3f}"
                + "".join(f"; native score {n['native_score']:.3f} ({n['scene']})" for n in report.get("native") or [])
                + " |")
            continue
        rob = min(report.get("robustness") or [], key=lambda r: r["mean_gain"], default=None)
        lines.append(
            f"| `{report['weights']}` | {report['task']} | {', '.join(x['name'] for x in report['scenes'])} | "
            f"{s['mean_psnr']:.2f} ({s['mean_psnr_baseline']:.2f}) | {s['mean_gain']:+.2f} {_ci(s['mean_gain_ci'])} | "
            f"{w.get('gain', float('nan')):+.2f} ({w.get('scene')} {w.get('band')}) | "
            + (f"{rob['mean_gain']:+.2f} {_ci(rob['mean_gain_ci'])} ({rob['label']})" if rob else "n/a") + " |")
    return "\n".join(lines)


def card(meta: WeightsMeta, limits: list[str], evaluation: dict[str, dict[str, dict[str, float]]] | None = None,
         history_csv: str | Path | None = None, test_report: Mapping[str, Any] | None = None) -> str:
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
    if test_report is not None:
        if test_report.get("weights_sha256") != meta.sha256:
            raise ValueError(f"the test report is for other weights than {meta.name} ({meta.sha256[:16]}...)")
        lines += ["", *test_split_section(test_report)]
    lines += ["", "## Limits", "", *[f"- {x}" for x in limits], "", "## Licence", "", meta.licence, ""]
    return "\n".join(lines)


def write_card(weights: str | Path, limits: list[str],
               evaluation: dict[str, dict[str, dict[str, float]]] | None = None,
               history_csv: str | Path | None = None) -> Path:
    """Write ``NAME.md`` next to the weights (with the "Test split" section when ``NAME.test.json`` exists)."""
    meta = read_meta(weights)
    path = Path(weights).with_suffix("").with_suffix(".md")
    path.write_text(card(meta, limits, evaluation, history_csv, read_test_report(weights, meta)))
    return path


def card_lines_for_scenes(task: str) -> list[str]:
    """The splits by place of a task (training.datasets.scenes), one line per split, for a card."""
    if not task:
        return []
    from srcube.training.datasets.scenes import scenes

    lines = [f"Splits by place (task `{task}`): the model trained on some places, was selected on others and is "
             "reported once on yet others.", ""]
    for split, what in (("train", "training"), ("validation", "model selection"), ("test", "reported once")):
        lines.append(f"- {split} ({what}): " + "; ".join(f"{s.name}, {s.place}" for s in scenes(task, split)))
    return lines


#: columns of a run's metrics.csv shown in the card (key, header)
_HISTORY = (("psnr_gain", "gain vs bicubic (dB)"), ("psnr_gain_bicubic_projected", "gain vs bicubic+projection (dB)"),
            ("psnr_gain_hpf", "gain vs hpf (dB)"), ("cpsnr", "cPSNR"), ("cpsnr_bicubic", "cPSNR baseline"),
            ("native_cpsnr", "cPSNR on real frames"), ("native_cpsnr_median", "cPSNR real-frame median"),
            ("selection_gain", "selection gain (dB)"))


def history_lines(history_csv: str | Path) -> list[str]:
    """The run's validation metrics per epoch (its metrics.csv), as a markdown table."""
    with open(history_csv) as f:
        rows = list(csv.DictReader(f))
    keys = [(k, h) for k, h in _HISTORY if rows and k in rows[0]]
    lines = ["| epoch | " + " | ".join(h for _, h in keys) + " |", "|---|" + "---|" * len(keys)]
    for r in rows:
        lines.append(f"| {r['epoch']} | " + " | ".join(f"{float(r[k]):+.3f}" if "gain" in k else f"{float(r[k]):.3f}"
                                                       for k, _ in keys) + " |")
    return lines


def probav_section(report: Mapping[str, Any]) -> list[str]:
    """The card's "Test split" section of multi-frame PROBA-V weights (Kelvins metric on the Wald pairs)."""
    from srcube.training.evaluation.report import probav_markdown

    deg = report["scenes"][0]["degradation"]["label"] if report.get("scenes") else "?"
    return ["## Test split", "",
            f"Task `probav`, reported once for these weights (srcube {report['srcube_version']}, "
            f"{report.get('created', '')}). Multi-frame Wald protocol on real PROBA-V Kelvins LR frames (their HR "
            f"images were not released): every frame in turn is the target, the 8 clearest other frames degraded "
            f"x{report['scale']} ({deg}) are the views"
            + (", registered to the clearest view before fusion as `run_region` does (`models.registration`)."
               if report.get("register") else ".") + " Kelvins metric: cPSNR (bias removed, best of 49 shifts, "
            "border 3); the Kelvins baseline is bicubic of the mean of the views; \"Wald Kelvins score\" = "
            "cPSNR(baseline) / cPSNR(model) (lower is better, 1.0 = baseline). Intervals: 95 % bootstrap over "
            "targets. This is not the competition's score against real HR images."
            + (" The second table scores the fusion of real frames with nothing degraded: how well its HR image, "
               "through the sensor, predicts a real frame it did not see." if report.get("native") else ""), "",
            probav_markdown(report)]


def defaults_markdown() -> str:
    """The README's table of what ``model="auto"`` (and ``sharpen="auto"``) picks, per sensor, scale and bands,
    from the shipped weights and their test reports (:func:`models.default_model`, :func:`models.default_sharpener`)."""
    from srcube import models

    ten = ["B02", "B03", "B04", "B08"]
    cases = (("sentinel-2", 2, ten, False, "B02 B03 B04 B08"), ("sentinel-2", 2, ["B04", "B8A"], False, "other bands"),
             ("sentinel-2", 4, ten, False, "B02 B03 B04 B08"), ("sentinel-2", 4, ["B04", "B8A"], False, "other bands"),
             ("sentinel-2", 3, None, False, "any"), ("proba-v", 3, None, False, "any (one frame per date)"),
             ("proba-v", 3, None, True, "any (composite windows)"))
    lines = ["| sensor | scale | bands | `model=\"auto\"` | mean gain vs bicubic on its test split (95 % CI) |",
             "|---|---|---|---|---|"]
    for sensor, scale, bands, multi, label in cases:
        name = models.default_model(sensor, scale, multi_frame=multi, bands=bands)
        report = models.test_report(name) if name != "bicubic" else None
        s = (report or {}).get("summary") or {}
        gain = (f"{s['mean_gain']:+.2f} dB {_ci(s.get('mean_gain_ci'))}" if s.get("mean_gain") is not None
                else "n/a (nothing shipped beats bicubic there)")
        lines.append(f"| {sensor} | x{scale} | {label} | `{name}` | {gain} |")
    sharpener = models.default_sharpener()
    report = models.test_report(sharpener) if sharpener != "hpf" else None
    s = (report or {}).get("summary_hpf") or {}
    gain = (f"{s['mean_gain']:+.2f} dB vs hpf {_ci(s.get('mean_gain_ci'))}" if s.get("mean_gain") is not None
            else "linear high-pass injection (no learned sharpener beats it on its test split)")
    where = "| sentinel-2 | 20 m -> 10 m | B05 B06 B07 B8A B11 B12 (`sharpen=\"auto\"`)"
    lines.append(f"{where} | `{sharpener}` | {gain} |")
    return "\n".join(lines)


#: README markers whose content :func:`update_readme` regenerates
README_TABLES = {"defaults-table": defaults_markdown, "test-table": test_table_markdown}


def update_readme(path: str | Path) -> list[str]:
    """Rewrite the generated tables of a README between their ``<!-- NAME -->`` and ``<!-- /NAME -->``
    markers from the shipped weights and their test reports; returns the tables that changed."""
    p = Path(path)
    text = p.read_text()
    changed = []
    for marker, make in README_TABLES.items():
        start, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
        if start not in text or end not in text:
            raise ValueError(f"{p}: no {start} ... {end} markers")
        head, rest = text.split(start, 1)
        old, tail = rest.split(end, 1)
        new = "\n" + make() + "\n"
        if old != new:
            changed.append(marker)
        text = head + start + new + end + tail
    p.write_text(text)
    return changed


if __name__ == "__main__":  # python -m srcube.training.card --readme README.md
    import argparse

    parser = argparse.ArgumentParser(description="regenerate the README's tables from the shipped test reports")
    parser.add_argument("--readme", default="README.md")
    print("updated:", ", ".join(update_readme(parser.parse_args().readme)) or "nothing")
