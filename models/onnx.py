"""ONNX export of every srcube model, with dynamic batch and spatial axes, and a parity check with onnxruntime.

The graph's inputs and output, by kind of model (:func:`kind`):

* single-image: ``x (N, C, H, W) -> y (N, C, sH, sW)``, ``C`` the model's ``channels`` (1 for band-agnostic
  models: fold bands into the batch yourself, as srcube's onnxruntime engine does);
* multi-frame (HighRes-net): ``views (N, T, C, H, W), masks (N, T, H, W) -> y (N, C, sH, sW)`` with
  ``T = n_views`` fixed (pad with zero views and zero masks: a view without a clear pixel counts as missing);
* band sharpener: ``low (N, L, h, w), guide (N, G, rh, rw) -> y (N, L, rh, rw)``.

``N``, ``H`` and ``W`` are dynamic. The graph is made by ``torch.export`` (non-strict, every batch and spatial
axis ``Dim.AUTO``) and translated by ``torch.onnx``. What the eager code computes in ways ONNX has no operator for
runs as plain operators while a graph is exported (``torch.compiler.is_exporting()``), the same values to
rounding, checked here: the consistency projection's banded inverse is a constant of the model
(:class:`~srcube.models.consistency.ProjectionLayer`, precomputed, size-independent), so such a graph takes axes of
more than ``2 order`` input pixels (13; ``min_size`` in the report and the metadata); the PSF's tap sums are
one convolution (:func:`~srcube.models.psf._taps`); the sharpener's small linear solves are an unrolled Cholesky
(:func:`~srcube.models.sharpen._solve_spd`) and it takes its no-data path (the same values on finite input).

The file's metadata (``metadata_props["srcube"]``, JSON; :func:`read_metadata`) records the model, its kind,
scale, bands, inputs, ``min_size`` and the sha256 of its weights, so a runner can check it runs the weights
it means to. Every failure is an :class:`~srcube.models.errors.OnnxExportError` saying why (or
:class:`~srcube.models.errors.OnnxUnavailableError` without the ``onnx`` extra), never the exporter's traceback.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from srcube.models.errors import OnnxExportError, OnnxUnavailableError

if TYPE_CHECKING:
    from srcube.models.base import SRModel

#: ``metadata_props`` key of the JSON that says what the graph is, and its format
METADATA_KEY, FORMAT = "srcube", "srcube-onnx/1"
#: (batch, height, width) of the input (low grid) at which :func:`export_onnx` compares onnxruntime with torch:
#: batch 1 (how the engine runs on a CPU) and 2, square and not, none a multiple of the export example's size
PARITY_SIZES: tuple[tuple[int, int, int], ...] = ((1, 31, 37), (2, 64, 64), (1, 45, 90))
#: the largest max abs difference (reflectance) accepted between onnxruntime and torch
PARITY_TOLERANCE = 1e-4
#: (batch, height, width) of the example the graph is traced with: no axis 0 or 1 (torch.export would fix it),
#: no two spatial axes alike (it would take them for one)
_EXAMPLE = (2, 24, 28)
#: what the onnx extra must install
_PACKAGES = ("onnx", "onnxscript", "onnxruntime")


def kind(model: SRModel) -> str:
    """``"single-image"``, ``"multi-frame"`` or ``"sharpen"``: what the graph's inputs are (module docstring)."""
    from srcube.models.sharpen import Sharpener

    if isinstance(_inner(model), Sharpener):
        return "sharpen"
    return "multi-frame" if model.multi_frame else "single-image"


def input_names(model: SRModel) -> list[str]:
    """The graph's input names for ``model``."""
    return {"single-image": ["x"], "multi-frame": ["views", "masks"], "sharpen": ["low", "guide"]}[kind(model)]


def _inner(model: SRModel) -> nn.Module:
    """The architecture under a normalising wrapper (:class:`~srcube.models.base.Normalized`)."""
    inner = getattr(model, "inner", model)
    return inner if isinstance(inner, nn.Module) else model


def example_inputs(model: SRModel, n: int, h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Seeded inputs of ``model``'s graph: ``n`` items on an ``h x w`` input grid, reflectance-like values (and
    masks with a fifth of the pixels cloudy for multi-frame models)."""
    g = torch.Generator().manual_seed(seed)
    c, inner = model.channels, _inner(model)
    what = kind(model)
    if what == "multi-frame":
        t = int(getattr(inner, "n_views", 1))
        views = torch.rand(n, t, c, h, w, generator=g) * 0.4
        masks = (torch.rand(n, t, h, w, generator=g) > 0.2).float()
        return views, masks
    if what == "sharpen":
        r, guide_channels = model.scale, int(getattr(inner, "guide_channels", 1))
        low = torch.rand(n, c, h, w, generator=g) * 0.4
        return low, torch.rand(n, guide_channels, h * r, w * r, generator=g) * 0.4
    return (torch.rand(n, c, h, w, generator=g) * 0.4,)


class _OneInput(nn.Module):
    """The model with its graph's one named input (``Normalized.forward`` takes ``*args``: export wants names)."""

    def __init__(self, model: SRModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class _TwoInputs(_OneInput):
    """The model with its graph's two named inputs (views and masks, or low and guide)."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.model(a, b)


def check_available() -> None:
    """OnnxUnavailableError unless onnx, onnxscript and onnxruntime are importable."""
    missing = [p for p in _PACKAGES if importlib.util.find_spec(p) is None]
    if missing:
        raise OnnxUnavailableError(f"ONNX export needs {', '.join(missing)} (not installed): install srcube's onnx "
                                   "extra (pip install 'srcube[onnx]')")


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter's notices that say nothing about the model, silenced (narrowly) for one export."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx._internal.exporter._registration", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:  # one warning per torchvision op it cannot register (torchvision is not used)
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            # torch.export's pytree emits an internal deprecation notice on every export
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
            # naming: when two dynamic axes are provably equal the exporter keeps one name and says so
            warnings.filterwarnings("ignore", message="# The axis name: .* will not be used")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _reason(exc: BaseException) -> str:
    """Why the exporter refused, in one line: the operation it has no translation for, the value-dependent
    branch, or the first line of its message."""
    text = str(exc)
    op = re.search(r"No ONNX function found for <OpOverload\(op='([^']+)'", text)
    if op:
        return f"the ONNX exporter has no translation of {op.group(1)}"
    if "data-dependent" in text:
        where = re.search(r'File "([^"]+)", line (\d+), in (\w+)', text)
        at = f" ({Path(where.group(1)).name}:{where.group(2)} in {where.group(3)})" if where else ""
        return f"its forward pass branches on the input's values{at}, which a graph cannot hold"
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    return f"{type(exc).__name__}: {first[:300]}"


def _min_size(program: Any, names: Sequence[str]) -> int:
    """The smallest input height and width the exported program accepts (its range constraints), checking that
    the batch and spatial axes stayed dynamic (OnnxExportError naming an axis the trace fixed)."""
    by_name = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    users = list(program.graph_signature.user_inputs)
    lowest = 1
    for name, node_name in zip(names, users, strict=True):
        shape = by_name[node_name].meta["val"].shape
        axes = {"batch": 0, "height": len(shape) - 2, "width": len(shape) - 1}
        for axis, i in axes.items():
            size = shape[i]
            if not isinstance(size, torch.SymInt):
                raise OnnxExportError(f"the traced graph fixes the {axis} of input {name!r} to {int(size)}: the "
                                      "model's forward pass reads that size as a constant")
            if name == names[0] and axis != "batch":
                bound = program.range_constraints.get(size.node.expr)
                lowest = max(lowest, int(bound.lower) if bound is not None else 1)
    return lowest


def _identity(model: SRModel) -> dict[str, Any]:
    """What the graph is of: the model's name, kind, scale, bands and the sha256 of its weights (when loaded from
    a weights file)."""
    meta = getattr(model, "weights_meta", None)
    inner = _inner(model)
    out: dict[str, Any] = {"format": FORMAT, "model": getattr(meta, "name", "") or model.name,
                           "architecture": model.name, "kind": kind(model), "scale": int(model.scale),
                           "channels": int(model.channels), "bands": list(model.bands) if model.bands else None,
                           "receptive_field": int(model.receptive_field), "weights_sha256": getattr(meta, "sha256", "")}
    if out["kind"] == "multi-frame":
        out["n_views"] = int(getattr(inner, "n_views", 1))
    if out["kind"] == "sharpen":
        out["guide_channels"] = int(getattr(inner, "guide_channels", 1))
    return out


def export_onnx(model: SRModel, path: str | Path, *, check: bool = True,
                sizes: Sequence[tuple[int, int, int]] = PARITY_SIZES,
                tolerance: float = PARITY_TOLERANCE) -> dict[str, Any]:
    """Export ``model`` (any srcube model, module docstring) to ``path``; with ``check``, run the file in
    onnxruntime (CPU) at each (batch, height, width) of ``sizes`` and compare it with the torch model.

    Returns a report: ``path``, ``bytes``, ``inputs``, ``kind``, ``min_size`` (the smallest input height and width
    the graph takes), and with ``check`` the ``checks`` (input shape, output shape, max abs difference per size),
    their largest ``max_abs_diff``, and ``probe_shape``/``output_shape`` of the first. Raises OnnxExportError
    (no file left) when the exporter refuses the model, an axis does not stay dynamic, or onnxruntime differs from
    torch by more than ``tolerance`` at a size; OnnxUnavailableError without the onnx extra.
    """
    check_available()
    model = model.eval()
    path = Path(path)
    names = input_names(model)
    example = example_inputs(model, *_EXAMPLE, seed=0)
    auto = torch.export.Dim.AUTO
    dynamic = tuple({0: auto, e.ndim - 2: auto, e.ndim - 1: auto} for e in example)
    wrapper = _OneInput(model) if len(names) == 1 else _TwoInputs(model)
    identity = _identity(model)
    try:
        with _quiet_exporter():
            program = torch.export.export(wrapper, example, dynamic_shapes=dynamic, strict=False)
            min_size = _min_size(program, names)
            onnx_program = torch.onnx.export(program, example, input_names=names, output_names=["y"], dynamo=True,
                                             verbose=False, report=False, optimize=True)
    except OnnxExportError as exc:
        raise OnnxExportError(f"{identity['model']} cannot be exported to ONNX: {exc}") from None
    except Exception as exc:  # the exporter raises many types (UserError, ConversionError, ...): one typed error
        raise OnnxExportError(f"{identity['model']} cannot be exported to ONNX: {_reason(exc)}") from exc
    assert onnx_program is not None
    try:
        version = importlib.metadata.version("srcube")
    except importlib.metadata.PackageNotFoundError:
        version = ""
    doc = {**identity, "inputs": names, "output": "y", "min_size": min_size, "srcube_version": version,
           "torch_version": torch.__version__}
    onnx_program.model.metadata_props[METADATA_KEY] = json.dumps(doc, sort_keys=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx_program.save(str(path), external_data=False)
    report: dict[str, Any] = {"path": str(path), "bytes": path.stat().st_size, "inputs": names, "kind": doc["kind"],
                              "min_size": min_size}
    if check:
        try:
            report.update(check_parity(model, path, sizes=sizes, tolerance=tolerance))
        except BaseException:
            path.unlink(missing_ok=True)
            raise
    return report


def check_parity(model: SRModel, path: str | Path, *, sizes: Sequence[tuple[int, int, int]] = PARITY_SIZES,
                 tolerance: float = PARITY_TOLERANCE) -> dict[str, Any]:
    """The exported graph at ``path`` in onnxruntime (CPU) vs ``model`` in torch, on seeded inputs at each
    (batch, height, width) of ``sizes``: ``checks`` (per size), their largest ``max_abs_diff``, and
    ``probe_shape``/``output_shape`` of the first; OnnxExportError above ``tolerance`` or on another shape."""
    import onnxruntime as ort

    names = input_names(model)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initializers are not the model's business
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    checks: list[dict[str, Any]] = []
    for i, (n, h, w) in enumerate(sizes):
        probe = example_inputs(model, n, h, w, seed=1 + i)
        with torch.inference_mode():
            ref = model(*probe).numpy()
        got = session.run(None, {k: t.numpy() for k, t in zip(names, probe, strict=True)})[0]
        if got.shape != ref.shape:
            raise OnnxExportError(f"the exported {model.name} gives shape {list(got.shape)} for input "
                                  f"{list(probe[0].shape)} in onnxruntime, torch {list(ref.shape)}")
        diff = float(np.abs(got.astype(np.float64) - ref).max())
        checks.append({"input_shape": list(probe[0].shape), "output_shape": list(got.shape), "max_abs_diff": diff})
        if not diff <= tolerance:
            raise OnnxExportError(f"the exported {model.name} differs from torch by {diff:.3g} (tolerance "
                                  f"{tolerance:g}) on input {list(probe[0].shape)} in onnxruntime; no file is kept")
    return {"checks": checks, "max_abs_diff": max(c["max_abs_diff"] for c in checks),
            "probe_shape": checks[0]["input_shape"], "output_shape": checks[0]["output_shape"]}


def read_metadata(path: str | Path) -> dict[str, Any]:
    """What an exported file says it is (:func:`export_onnx`'s metadata); OnnxExportError for a file that is not
    an ONNX model exported by srcube."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, OSError, ...: the file is not a model
        raise OnnxExportError(f"{path} is not a readable ONNX model ({type(exc).__name__}: "
                              f"{str(exc)[:200]})") from None
    props = {p.key: p.value for p in model.metadata_props}
    try:
        doc = json.loads(props[METADATA_KEY])
        if doc.get("format") != FORMAT:
            raise ValueError(doc.get("format"))
    except (KeyError, ValueError, AttributeError):
        raise OnnxExportError(f"{path} is an ONNX model without srcube's metadata ({FORMAT}): export it with "
                              "srcube export-onnx (or models.onnx.export_onnx)") from None
    return dict(doc)


# --- the cache of exported graphs ----------------------------------------------------------------------------------

#: where exported graphs are kept, unless ``SRCUBE_ONNX_CACHE`` names a folder: ``$XDG_CACHE_HOME/srcube/onnx``
CACHE_ENV = "SRCUBE_ONNX_CACHE"


def cache_dir() -> Path:
    """The folder of the cache of exported graphs: ``$SRCUBE_ONNX_CACHE``, else ``$XDG_CACHE_HOME/srcube/onnx``
    (``~/.cache/srcube/onnx``)."""
    given = os.environ.get(CACHE_ENV)
    if given:
        return Path(given).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "srcube" / "onnx"


def cache_key(model: SRModel) -> str:
    """sha256 of what the exported graph depends on: the tensors (a model loaded from weights and changed in memory
    is another model; hashing a shipped model's takes milliseconds), the architecture and its config, the model
    layer's source (the graph is traced from it), the weights' name and sha256, torch's and the format's versions."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    doc = _identity(model)
    config = getattr(_inner(model), "config", None)
    doc = {**doc, "config": config if isinstance(config, dict) else repr(model), "torch": torch.__version__,
           "type": f"{type(_inner(model)).__module__}.{type(_inner(model)).__qualname__}"}
    h.update(json.dumps(doc, sort_keys=True, default=str).encode())
    for source in sorted(Path(__file__).resolve().parent.glob("*.py")):
        h.update(source.read_bytes())
    return h.hexdigest()


def cached_export(model: SRModel, *, cache: str | Path | None = None) -> tuple[Path, dict[str, Any] | None]:
    """The exported graph of ``model`` in the cache (``cache``, default :func:`cache_dir`), exported (with the
    parity check) the first time: (its path, the export's report, or None when it was in the cache already).

    Keyed by :func:`cache_key`, so other weights, another srcube or torch, or an edited model never reuse a graph.
    Written to a temporary name and renamed: a process that reads the cache never sees half a file, and two that
    export the same graph at once each write a whole one."""
    folder = Path(cache) if cache is not None else cache_dir()
    name = re.sub(r"[^A-Za-z0-9_.+-]", "_", _identity(model)["model"]) or "model"
    path = folder / f"{name}-{cache_key(model)[:24]}.onnx"
    if path.is_file():
        return path, None
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}-", suffix=".onnx.part", dir=folder)
    os.close(fd)
    try:
        report = export_onnx(model, tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path, {**report, "path": str(path)}
