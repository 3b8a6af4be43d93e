"""The test report next to the weights (``NAME.test.json``, written once per weights) and the markdown of
evaluations (the model card and the README table are made from these: :mod:`training.card`)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from srcube.models.psf import Degradation
from srcube.training.evaluation.probav import evaluate_probav_split
from srcube.training.evaluation.stats import BOOTSTRAP, Bootstrap
from srcube.training.evaluation.wald import WALD, evaluate_split

REPORT_FORMAT = "srcube-test-report/1"


def report_path(weights: str | Path) -> Path:
    """``NAME.test.json`` next to ``NAME.safetensors`` / ``NAME.json``."""
    p = Path(weights)
    if p.suffix in (".json", ".safetensors"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".test.json")


def write_test_report(weights: str | Path, task: str, *, degradation: Degradation = WALD,
                      max_side: int | None = None, bootstrap: Bootstrap = BOOTSTRAP, overwrite: bool = False,
                      allow_untrained: bool = False) -> Path:
    """Evaluate weights on the test split of ``task`` once and write ``NAME.test.json`` next to them: the
    rows, the summary, the robustness table, the scenes, the degradation, the peak convention, the
    srcube version and the weights' sha256. Refuses to report the same weights twice unless ``overwrite``."""
    from srcube.models.weights import load_weights, read_meta

    meta = read_meta(weights)
    path = report_path(weights)
    if path.exists() and not overwrite:
        old = json.loads(path.read_text())
        if old.get("weights_sha256") == meta.sha256:
            raise FileExistsError(f"{path} already reports these weights (sha256 {meta.sha256[:16]}...); the test "
                                  "split is reported once: pass overwrite=True only to correct the report itself")
    model, _ = load_weights(weights, allow_untrained=allow_untrained)
    if model.multi_frame:  # PROBA-V: the Kelvins metric on the multi-frame Wald protocol
        doc = {"format": REPORT_FORMAT, "weights": meta.name, "weights_sha256": meta.sha256,
               "architecture": meta.architecture, **evaluate_probav_split(model, "test", bootstrap=bootstrap,
                                                                          name=meta.name),
               "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        path.write_text(json.dumps(doc, indent=1) + "\n")
        return path
    # evaluated as deployed: through the consistency projection when the weights were trained for it
    project = bool(meta.training.get("consistency_projection"))
    result = evaluate_split(model, task, "test", degradation=degradation, robustness=True, max_side=max_side,
                            bootstrap=bootstrap, name=meta.name, project=project)
    if not result.results:
        raise FileNotFoundError(f"no test scene of {task} could be evaluated: {result.skipped}")
    doc = {"format": REPORT_FORMAT, "weights": meta.name, "weights_sha256": meta.sha256,
           "architecture": meta.architecture, "consistency_projection": project, **result.to_json(),
           "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path

# --- markdown ------------------------------------------------------------------------------------------


def _ci(ci: Sequence[float] | None, fmt: str = "{:.2f}") -> str:
    if not ci:
        return "n/a"
    return "[" + ", ".join(fmt.format(v) for v in ci) + "]"


def _num(v: Any, fmt: str) -> str:
    return "n/a" if v is None else fmt.format(v)


def rows_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """Per scene and band (the JSON rows): own-peak PSNR and gains with 95 % intervals, SSIM, opensr-test."""
    extra = [k for k in ("hpf",) if any(k in r["baselines"] for r in rows)]
    head = ["scene", "band", "peak", "PSNR dB [95% CI]", "bicubic PSNR dB", "gain vs bicubic dB [95% CI]",
            *(f"gain vs {k} dB [95% CI]" for k in extra), "SSIM (bicubic)", "L1 to LR", "shift LR px",
            "improv. / omis. / halluc. %"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        b = r["baselines"]["bicubic"]
        cells = [r["scene"], r["band"], f"{r['peak']:.4f}", f"{_num(r['psnr'], '{:.2f}')} {_ci(r['psnr_ci'])}",
                 _num(b["psnr"], "{:.2f}"), f"{_num(b['gain'], '{:+.2f}')} {_ci(b['gain_ci'], '{:+.2f}')}",
                 *(f"{_num(r['baselines'][k]['gain'], '{:+.2f}')} {_ci(r['baselines'][k]['gain_ci'], '{:+.2f}')}"
                   if k in r["baselines"] else "n/a" for k in extra),
                 f"{_num(r['ssim'], '{:.4f}')} ({_num(b['ssim'], '{:.4f}')})", _num(r.get("consistency_l1"), "{:.5f}"),
                 _num(r.get("spatial_px"), "{:.3f}"),
                 " / ".join(_num(r.get(k), "{:.1f}") for k in ("improvement_pct", "omission_pct", "hallucination_pct"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scenes_markdown(scene_rows: Sequence[Mapping[str, Any]]) -> str:
    """Per scene (the JSON ``scenes``): place, window and the scene-level opensr-test metrics."""
    head = ["scene", "place", "window (row, col, h, w)", "L1 to LR", "spectral angle deg", "shift LR px",
            "improv. / omis. / halluc. %"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in scene_rows:
        cells = [s["name"], s.get("place", ""), ", ".join(map(str, s["window"])) if s.get("window") else "n/a",
                 _num(s.get("consistency_l1"), "{:.5f}"), _num(s.get("spectral_deg"), "{:.3f}"),
                 _num(s.get("spatial_px"), "{:.3f}"),
                 " / ".join(_num(s.get(k), "{:.1f}") for k in ("improvement_pct", "omission_pct", "hallucination_pct"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_markdown(summary: Mapping[str, Any]) -> str:
    """One line: mean gain with its interval over n scene-bands, and the worst scene-band."""
    if not summary.get("n"):
        return f"No scene-band was evaluated against {summary.get('baseline', 'bicubic')}."
    w = summary["worst"]
    return (f"Mean gain over {summary['baseline']}: {_num(summary['mean_gain'], '{:+.2f}')} dB "
            f"{_ci(summary['mean_gain_ci'], '{:+.2f}')} (95 % block-bootstrap interval) over {summary['n']} "
            f"scene-bands; worst: {w['scene']} {w['band']} {_num(w['gain'], '{:+.2f}')} dB "
            f"{_ci(w['gain_ci'], '{:+.2f}')}.")


def robustness_markdown(table: Sequence[Mapping[str, Any]]) -> str:
    """One row per degradation: mean gain over bicubic with its interval, worst scene-band."""
    head = ["degradation", "mean gain vs bicubic dB [95% CI]", "worst scene-band dB", "scene-bands"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table:
        w = r.get("worst") or {}
        worst = f"{_num(w.get('gain'), '{:+.2f}')} ({w.get('scene')} {w.get('band')})" if w else "n/a"
        lines.append(f"| {r['label']} | {_num(r['mean_gain'], '{:+.2f}')} {_ci(r['mean_gain_ci'], '{:+.2f}')} | "
                     f"{worst} | {r['n']} |")
    return "\n".join(lines)


def split_markdown(doc: Mapping[str, Any]) -> str:
    """A whole split evaluation (its JSON) as markdown: scenes, rows, summary, robustness, skipped."""
    d = doc["degradation"]
    parts = [f"**{doc['model']}** x{doc['scale']} on the {doc['split']} split of {doc['task']}; Wald degradation "
             f"{d['label']}. {doc['peak_convention']}.", "", scenes_markdown(doc["scenes"]), "",
             rows_markdown(doc["rows"]), "", summary_markdown(doc["summary"])]
    for key in ("summary_hpf", "summary_projection"):
        if doc.get(key):
            parts += ["", summary_markdown(doc[key])]
    if doc.get("robustness"):
        parts += ["", "Robustness (the same scenes under other degradations):", "",
                  robustness_markdown(doc["robustness"])]
    if doc.get("skipped"):
        parts += ["", "Skipped: " + "; ".join(f"{s['scene']} ({s['reason']})" for s in doc["skipped"])]
    return "\n".join(parts)

def probav_markdown(doc: Mapping[str, Any]) -> str:
    """Per-scene table of a PROBA-V multi-frame evaluation."""
    lines = ["| scene | place | targets | cPSNR model | cPSNR Kelvins baseline | gain (95 % CI) | Wald Kelvins score |",
             "|---|---|---|---|---|---|---|"]
    for s in doc["scenes"]:
        lines.append(f"| {s['scene']} | {s['place']} | {s['targets']} | {s['cpsnr_model']:.2f} | "
                     f"{s['cpsnr_kelvins_baseline']:.2f} | {s['gain']:+.2f} ({_ci(s['gain_ci'])}) | "
                     f"{s['wald_kelvins_score']:.4f} |")
    m = doc["summary"]
    lines.append(f"| all | | {m['n']} | | | {m['mean_gain']:+.2f} ({_ci(m['mean_gain_ci'])}) | "
                 f"{m['wald_kelvins_score']:.4f} ({_ci(m['wald_kelvins_score_ci'], '{:.4f}')}) |")
    if doc.get("misregistration"):
        lines += ["", "Views misregistered (each view's sampling grid shifted by a random amount, uniform in +-the "
                  "given view pixels on each axis), all targets pooled; the baseline fuses the views as they are:", "",
                  "| misregistration (view px) | views registered first | gain (95 % CI) "
                  "| Wald Kelvins score (95 % CI) |", "|---|---|---|---|"]
        for r in doc["misregistration"]:
            lines.append(f"| +-{r['misregistration']:g} | {'yes' if r['register'] else 'no'} | {r['mean_gain']:+.2f} "
                         f"({_ci(r['mean_gain_ci'])}) | {r['wald_kelvins_score']:.4f} "
                         f"({_ci(r['wald_kelvins_score_ci'], '{:.4f}')}) |")
    if doc.get("native"):
        lines += ["", "Real frames, nothing degraded: every frame in turn held out and predicted from the fusion of "
                  "its 8 clearest other real frames (registered, at their own resolution, as `run_region` fuses them): "
                  "the fused HR image through the sensor's PSF, point-sampled on the held-out frame's measured grid. "
                  "cPSNR at the frame's resolution (bias removed, border 3). Baseline: the registered views' clear "
                  "median moved onto the held-out frame's grid (no super-resolution); \"native score\" = "
                  "cPSNR(baseline) / cPSNR(model), lower is better, 1.0 = the HR image predicts unseen real frames no "
                  "better than the median of the frames does.", "",
                  "| scene | targets | cPSNR model | cPSNR median | gain (95 % CI) | gain over bicubic of the median "
                  "(95 % CI) | native score (95 % CI) |", "|---|---|---|---|---|---|---|"]
        for r in doc["native"]:
            lines.append(f"| {r['scene']} | {r['targets']} | {r['cpsnr_model']:.2f} | {r['cpsnr_median_lr']:.2f} | "
                         f"{r['gain']:+.2f} ({_ci(r['gain_ci'])}) | {r['gain_over_bicubic']:+.2f} "
                         f"({_ci(r['gain_over_bicubic_ci'])}) | {r['native_score']:.4f} "
                         f"({_ci(r['native_score_ci'], '{:.4f}')}) |")
    return "\n".join(lines)
