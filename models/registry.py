"""The explicit registry of model architectures, and resolution of what a user names as a model.

A model name is one of:

* a registered architecture (``list_models()``): interpolation baselines build as they are;
  learned architectures need weights and are refused without them (untrained weights never
  masquerade as a model);
* the name of weights shipped with srcube (``models/weights/NAME.json``);
* a path to a weights file (``.safetensors`` or its ``.json`` metadata).
"""

from __future__ import annotations

import importlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srcube.models.errors import (
    ModelConfigError,
    ModelError,
    UnknownModelError,
    UnsupportedScaleError,
    WeightsNotFoundError,
)

if TYPE_CHECKING:
    from srcube.models.base import ModelSpec, SRModel

ANY_SCALE = tuple(range(2, 9))
log = logging.getLogger(__name__)

#: the largest value srcube builds for each integer architecture parameter. Configs come from weights metadata,
#: which is untrusted input (weights are shared): a crafted ``features`` once asked for a 1.4 TB allocation. Each
#: limit is far above what the architectures are used with (defaults: features 6-64, blocks 6-23, growth 32).
CONFIG_LIMITS = {"features": 1024, "blocks": 256, "encoder_blocks": 64, "growth": 512, "channels": 256,
                 "guide_channels": 256, "n_views": 256, "a": 16, "window": 4096}
#: the limit of any other integer parameter, of each integer in a list parameter, and of a list's length
OTHER_INT_LIMIT, LIST_LIMIT = 4096, 256
#: the most parameters (and buffers) one built architecture may hold: 400 MB as float32, 6x the largest default
#: architecture (esrgan: 16.9 M)
MAX_PARAMETERS = 100_000_000


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., SRModel]
    kind: str  # "interpolation", "single-image", "multi-frame", "sharpen" (learned), "sharpen-baseline"
    scales: tuple[int, ...]
    description: str
    defaults: tuple[tuple[str, Any], ...] = ()
    #: (parameters, receptive field) of the default config at scale 4 (or the first of ``scales``), known without
    #: building it: ``srcube models`` lists the registry without importing torch (tests/models/test_models.py
    #: checks each against what :func:`build` makes); None: built to be counted
    size: tuple[int, int] | None = None

    @property
    def needs_weights(self) -> bool:
        return self.kind not in ("interpolation", "sharpen-baseline")


_REGISTRY: dict[str, ModelEntry] = {}


@dataclass(frozen=True)
class _Lazy:
    """A builder that imports its architecture's module when it first builds (the registry imports no torch)."""

    module: str
    cls: str
    fixed: tuple[tuple[str, Any], ...] = ()

    def __call__(self, **config: Any) -> SRModel:
        model: SRModel = getattr(importlib.import_module(f"srcube.models.{self.module}"), self.cls)(
            **dict(self.fixed), **config)
        return model


def register(entry: ModelEntry) -> None:
    if entry.name in _REGISTRY:
        raise ValueError(f"model {entry.name!r} is already registered")
    _REGISTRY[entry.name] = entry


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        from srcube.models.weights import shipped_weights

        shipped = sorted(shipped_weights())
        raise UnknownModelError(
            f"unknown model {name!r}; known models: {', '.join(list_models())}"
            + (f"; shipped weights: {', '.join(shipped)}" if shipped else "")) from None


def _full_config(e: ModelEntry, config: dict[str, Any]) -> dict[str, Any]:
    """The builder's arguments: the entry's defaults, then ``config``, the channels told by the bands; checked
    against :data:`CONFIG_LIMITS` (ModelConfigError) before anything is built."""
    cfg = {**dict(e.defaults), **config}
    scale = cfg.get("scale")
    if scale is not None and scale not in e.scales:
        raise UnsupportedScaleError(f"model {e.name!r} supports scales {list(e.scales)}, not {scale}")
    if cfg.get("bands") is not None:
        if not isinstance(cfg["bands"], (list, tuple)):
            raise ModelConfigError(f"model {e.name!r} config bands={cfg['bands']!r} is not a list of band names")
        cfg["bands"] = tuple(cfg["bands"])
        cfg.setdefault("channels", len(cfg["bands"]))
    for key, value in cfg.items():
        _check_value(e.name, key, value)
    return cfg


def _check_value(name: str, key: str, value: Any) -> None:
    """ModelConfigError unless ``value`` is a bounded integer, a finite float, a string or a short list of them."""
    limit = CONFIG_LIMITS.get(key, OTHER_INT_LIMIT)
    lowest = 1 if key in CONFIG_LIMITS and key != "window" else 0
    where = f"model {name!r} config {key}={value!r}"[:200]
    if isinstance(value, (list, tuple)):
        if len(value) > LIST_LIMIT:
            raise ModelConfigError(f"model {name!r} config {key} lists {len(value)} values, above srcube's limit "
                                   f"{LIST_LIMIT}: the config (or the weights metadata it came from) is corrupt or "
                                   "crafted")
        for v in value:
            _check_value(name, key, v)
    elif isinstance(value, bool) or value is None or isinstance(value, str):
        return
    elif isinstance(value, int):
        if not lowest <= value <= limit:
            raise ModelConfigError(f"{where} is outside [{lowest}, {limit}], srcube's limit for {key}: the config "
                                   "(or the weights metadata it came from) is corrupt or crafted; nothing was built")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ModelConfigError(f"{where} is not a finite number: the config (or the weights metadata it came "
                                   "from) is corrupt or crafted")
    else:
        raise ModelConfigError(f"{where} is a {type(value).__name__}: architecture parameters are numbers, strings "
                               "or lists of them")


def parameter_shapes(name: str, **config: Any) -> dict[str, tuple[int, ...]]:
    """The shapes of the parameters and buffers ``build(name, **config)`` would make, found without allocating
    them (built on torch's meta device); ModelConfigError above :data:`MAX_PARAMETERS` values in all."""
    import torch

    e = entry(name)
    cfg = _full_config(e, config)
    try:
        with torch.device("meta"):
            model = e.builder(**cfg)
    except (TypeError, ValueError) as exc:  # a parameter the architecture does not take, or a value it refuses
        raise ModelConfigError(f"model {name!r} cannot be built with config {config}"[:300] + f": {exc}") from None
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    total = sum(math.prod(s) for s in shapes.values())
    if total > MAX_PARAMETERS:
        raise ModelConfigError(f"model {name!r} with config {config} would hold {total:,} parameters, above "
                               f"srcube's limit of {MAX_PARAMETERS:,}; nothing was allocated")
    return shapes


def build(name: str, **config: Any) -> SRModel:
    """Build a registered architecture with random initial weights (for training and tests). Its config is
    checked against :data:`CONFIG_LIMITS` first (ModelConfigError)."""
    e = entry(name)
    cfg = _full_config(e, config)
    model = e.builder(**cfg)
    model.config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}  # type: ignore[assignment]
    return model


def architecture_config(model: SRModel) -> dict[str, Any]:
    config = getattr(model, "config", None)
    if not isinstance(config, dict):
        raise ValueError(f"{type(model).__name__} was not made by models.build(), so its config is unknown")
    return {**config, "scale": model.scale}


def _is_path(name: str) -> bool:
    return name.endswith((".safetensors", ".json")) or "/" in name or Path(name).exists()


def resolve(model: str, *, scale: int | None = None, bands: Sequence[str] | None = None,
            allow_untrained: bool = False) -> tuple[ModelSpec, SRModel]:
    """What a user names as a model -> (a spec for the workers, a local instance), checked.

    Raises UnknownModelError, UnsupportedScaleError, WeightsNotFoundError, IncompatibleWeightsError,
    WeightsIntegrityError or UntrainedWeightsError before any work starts.
    """
    from srcube.models.base import ModelSpec
    from srcube.models.weights import load_weights, shipped_weights

    path: Path | None = None
    if _is_path(model):
        path = Path(model)
    elif model in shipped_weights():
        path = shipped_weights()[model]
    if path is not None:
        local, meta = load_weights(path, scale=scale, bands=bands, allow_untrained=allow_untrained)
        tensors = path.with_suffix(".safetensors")
        return ModelSpec(meta.name, (), str(tensors.resolve()), meta.sha256), local
    e = entry(model)
    if e.needs_weights:
        raise WeightsNotFoundError(
            f"{model!r} is an architecture with no trained weights shipped with srcube; pass a weights file "
            f"(model='path/to/weights.safetensors'), train one with srcube's training tools, or pick one of the "
            f"shipped weights: {', '.join(sorted(shipped_weights())) or 'none yet'}. srcube never downloads weights.")
    s = scale if scale is not None else 4
    if s not in e.scales:
        raise UnsupportedScaleError(f"model {model!r} supports scales {list(e.scales)}, not {s}")
    spec = ModelSpec.of(model, scale=s)
    return spec, spec.build()


def spec_for(name: str, *, scale: int) -> ModelSpec:
    """The spec of a registered interpolation model at ``scale`` (kept for callers of issue 2)."""
    return resolve(name, scale=scale)[0]


for _mode, _desc, _rf in (("nearest", "nearest-neighbour upsampling (each pixel becomes scale x scale)", 0),
                          ("bilinear", "bilinear interpolation baseline", 1),
                          ("bicubic", "bicubic interpolation baseline (a = -0.75, as torch/OpenCV)", 2)):
    register(ModelEntry(_mode, _Lazy("interp", "Interpolation", (("mode", _mode),)), "interpolation", ANY_SCALE,
                        _desc, size=(0, _rf)))
register(ModelEntry("lanczos", _Lazy("interp", "Lanczos"), "interpolation", ANY_SCALE,
                    "Lanczos-3 interpolation baseline", size=(0, 3)))
register(ModelEntry("srcnn", _Lazy("srcnn", "SRCNN"), "single-image", ANY_SCALE,
                    "SRCNN (Dong et al. 2015): bicubic + 9-1-5 convolutions, residual", size=(8_129, 3)))
register(ModelEntry("elsr", _Lazy("elsr", "ELSR"), "single-image", ANY_SCALE,
                    "ELSR (2022): 5 tiny convolutions + pixel shuffle, ~3k parameters", size=(1_606, 4)))
register(ModelEntry("srgan", _Lazy("sisr", "SISRGenerator", (("block", "residual"),)), "single-image", ANY_SCALE,
                    "SRGAN/SRResNet generator: residual blocks, pixel shuffle, bicubic skip",
                    defaults=(("features", 64), ("blocks", 16)), size=(1_553_409, 36)))
register(ModelEntry("esrgan", _Lazy("sisr", "SISRGenerator", (("block", "rrdb"),)), "single-image", ANY_SCALE,
                    "ESRGAN generator: RRDB blocks, pixel shuffle, bicubic skip",
                    defaults=(("features", 64), ("blocks", 23), ("growth", 32)), size=(16_917_441, 349)))
register(ModelEntry("lrnet", _Lazy("lrnet", "LRNet"), "single-image", ANY_SCALE,
                    "residual network at the input resolution + pixel shuffle + bicubic skip; with channels > 1 the "
                    "bands guide each other (srcube's cross-band Sentinel-2 models)",
                    defaults=(("features", 32), ("blocks", 6)), size=(115_920, 14)))
register(ModelEntry("hpf", _Lazy("sharpen", "HighPassInjection"), "sharpen-baseline", (2, 3, 4, 6),
                    "band sharpening by linear high-pass injection: regress each low band on the degraded guide, "
                    "inject the guide's high frequencies (no learning)", size=(0, 2)))
register(ModelEntry("dsen2", _Lazy("sharpen", "DSen2Lite"), "sharpen", (2, 3, 4, 6),
                    "learned band sharpening, DSen2-style (Lanaras et al. 2018), computed on the low grid",
                    size=(321_264, 14)))
register(ModelEntry("highresnet", _Lazy("highresnet", "HighResNet"), "multi-frame", ANY_SCALE,
                    "HighRes-net (Deudon et al. 2020): recursive fusion of up to n_views clear revisits",
                    defaults=(("scale", 3),), size=(620_490, 18)))


def test_report(name: str) -> dict[str, Any] | None:
    """The test-split report of shipped weights (``NAME.test.json`` beside them, written once by
    :func:`training.evaluation.write_test_report`), or None when there is none or it reports other weights."""

    from srcube.models.weights import read_meta, shipped_weights

    path = shipped_weights().get(name)
    if path is None:
        return None
    report = path.with_name(f"{name}.test.json")
    if not report.exists():
        return None
    doc = json.loads(report.read_text())
    return doc if doc.get("weights_sha256") == read_meta(path).sha256 else None


def beats_bicubic(name: str) -> tuple[bool, float | None]:
    """(whether the weights beat bicubic on their test split with the lower end of the 95 % interval of
    the mean gain above zero, that mean gain in dB)."""
    doc = test_report(name)
    summary = (doc or {}).get("summary") or {}
    ci, gain = summary.get("mean_gain_ci"), summary.get("mean_gain")
    # single-image: bicubic; multi-frame PROBA-V: the Kelvins baseline, bicubic of the mean of the views
    if summary.get("baseline", "bicubic") not in ("bicubic", "kelvins-baseline") or not ci or gain is None:
        return False, None
    return float(ci[0]) > 0, float(gain)


def default_model(sensor: str = "sentinel-2", scale: int = 4, multi_frame: bool = False,
                  bands: Sequence[str] | None = None) -> str:
    """The model ``"auto"`` means: among the shipped weights for ``sensor``, ``scale`` and kind, those that
    beat bicubic on their test split (places used neither for training nor for selection) with the lower end
    of the 95 % interval of the mean gain above zero qualify; ``"bicubic"`` where none does.

    Weights made for particular bands (the cross-band models take B02 B03 B04 B08 together) qualify only
    when ``bands`` are exactly theirs; band-agnostic weights qualify for any bands. Among the qualified, the
    larger mean gain over bicubic on their *validation* place wins: the test split only says whether a
    model may be the default, never which one.
    """
    from srcube.models.weights import read_meta, shipped_weights

    best: tuple[float, str] | None = None
    for name, path in shipped_weights().items():
        meta = read_meta(path)
        if not meta.trained or meta.scale != scale or sensor not in meta.training.get("sensors", []):
            continue
        kind = entry(meta.architecture).kind
        if kind not in ("single-image", "multi-frame") or (kind == "multi-frame") != multi_frame:
            continue  # band sharpeners are not super-resolution models
        if meta.bands is not None and (bands is None or list(bands) != list(meta.bands)):
            continue
        wins, _ = beats_bicubic(name)
        if not wins:
            continue
        rank = float(meta.metrics.get("psnr_gain", 0.0))
        if best is None or rank > best[0]:
            best = (rank, name)
    return best[1] if best else "bicubic"


#: the learned band sharpener srcube ships once it is trained: ``models/weights/s2-sharpen-x2.*``
SHIPPED_SHARPENER = "s2-sharpen-x2"
#: the sharpener used while none is shipped
BASELINE_SHARPENER = "hpf"


def default_sharpener(bands: Sequence[str] | None = None) -> str:
    """What band sharpening with ``model="auto"`` uses: the shipped learned sharpener where it beats the
    no-learning baseline on its test split, else ``"hpf"``.

    The shipped sharpener (:data:`SHIPPED_SHARPENER`, ``models/weights/s2-sharpen-x2.{safetensors,json}``)
    is used when it is trained, its architecture is a learned sharpener (kind ``"sharpen"``), the run's 20 m
    bands (``bands``, when given) are exactly its bands in its order, and its test report
    (``s2-sharpen-x2.test.json``, of these very weights) shows a mean gain over linear high-pass injection
    whose 95 % interval lies above zero (``summary_hpf``). Otherwise: ``"hpf"``.
    """
    from srcube.models.weights import read_meta, shipped_weights

    path = shipped_weights().get(SHIPPED_SHARPENER)
    if path is None:
        return BASELINE_SHARPENER
    try:
        meta = read_meta(path)
        kind = entry(meta.architecture).kind
    except ModelError as exc:
        log.warning("shipped sharpener %s is unreadable (%s); using %s", SHIPPED_SHARPENER, exc, BASELINE_SHARPENER)
        return BASELINE_SHARPENER
    if not meta.trained or kind != "sharpen":
        return BASELINE_SHARPENER
    if bands is not None and meta.bands is not None:
        low = [b for b in bands if b in meta.bands]
        if low and low != list(meta.bands):  # learned weights take exactly their bands, in their order
            log.info("%s sharpens %s together, not %s; using %s", SHIPPED_SHARPENER, meta.bands, low,
                     BASELINE_SHARPENER)
            return BASELINE_SHARPENER
    summary = (test_report(SHIPPED_SHARPENER) or {}).get("summary_hpf") or {}
    ci = summary.get("mean_gain_ci")
    if not ci or float(ci[0]) <= 0.0:
        log.info("%s: no test report showing a gain over %s beyond doubt (%s); using %s", SHIPPED_SHARPENER,
                 BASELINE_SHARPENER, ci, BASELINE_SHARPENER)
        return BASELINE_SHARPENER
    return SHIPPED_SHARPENER
