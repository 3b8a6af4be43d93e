"""``engine="onnx"``: a model's exported ONNX graph run by onnxruntime inside the same tiled-map engine.

:func:`~srcube.pipeline.sr.infer.super_resolve` resolves and checks the model as for torch, then takes its graph
(:func:`onnx_graph`): a given ``.onnx`` file, checked against the model (srcube's metadata in it: kind, scale,
the weights' sha256), or the model exported on the fly into the cache of exported graphs
(:func:`srcube.models.onnx.cached_export`: keyed by the tensors, the model code and the versions, with the
export's onnxruntime parity check). The graph's bytes enter the Dask graph once (:class:`OnnxGraph`, one shared
key, tokenized by its sha256), so workers on other machines need no shared folder; each worker process makes one
onnxruntime session per graph, device and thread count (:func:`session`). Tiles, margins, pass tiles, the
consistency projection (torch, after the graph), no data and cropping are the engine's, as for torch: the result
is the torch result to float32 rounding (the export's parity tolerance, 1e-4).

On a worker whose engine device is CUDA, the session takes onnxruntime's CUDAExecutionProvider when the installed
onnxruntime has it (the ``onnxruntime-gpu`` build), else the CPU one; on a CPU it runs with the task's threads.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from srcube import models
from srcube.pipeline.errors import (
    IncompatibleWeightsError,
    InvalidDataError,
    InvalidOptionError,
    OnnxExportError,
    OnnxUnavailableError,
    as_pipeline_error,
)

if TYPE_CHECKING:
    from srcube.models import SRModel

#: what runs the model: torch (the default) or the exported graph in onnxruntime
ENGINES = ("torch", "onnx")


def checked_engine(engine: str, precision: str = "fp32") -> str:
    """``engine`` checked (InvalidOptionError): one of :data:`ENGINES`; the ONNX graph is float32, so
    ``engine="onnx"`` takes ``precision="fp32"`` only."""
    if not isinstance(engine, str) or engine not in ENGINES:
        raise InvalidOptionError(f"engine must be one of {', '.join(map(repr, ENGINES))}, got {engine!r}")
    if engine == "onnx" and precision != "fp32":
        raise InvalidOptionError(f"engine='onnx' runs the exported float32 graph; precision={precision!r} is for "
                                 "torch: pass precision='fp32' or engine='torch'")
    return engine


@dataclass(frozen=True)
class OnnxGraph:
    """An exported graph as it enters the Dask graph: its bytes, their sha256 and srcube's metadata from the file
    (:func:`srcube.models.onnx.read_metadata`). Tokenized by the sha256 alone."""

    data: bytes = field(repr=False)
    sha256: str
    meta: tuple[tuple[str, Any], ...] = field(repr=False)

    @classmethod
    def read(cls, path: str | Path) -> OnnxGraph:
        """The graph in the file at ``path`` (OnnxExportError for a file that is not one srcube exported)."""
        from srcube.models.onnx import read_metadata

        doc = read_metadata(path)
        data = Path(path).read_bytes()
        return cls(data, hashlib.sha256(data).hexdigest(),
                   tuple(sorted((k, json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in doc.items())))

    @property
    def metadata(self) -> dict[str, Any]:
        out = dict(self.meta)
        for key in ("bands", "inputs"):
            if isinstance(out.get(key), str):
                out[key] = json.loads(out[key])
        return out

    @property
    def min_size(self) -> int:
        """The smallest input height and width the graph takes."""
        return int(self.metadata.get("min_size", 1))

    def runner(self, device: str, threads: int) -> OnnxRunner:
        """What the engine calls in place of the torch model on ``device`` (one session per process)."""
        return OnnxRunner(self, session(self, device, threads), device)

    def __dask_tokenize__(self) -> tuple[str, str]:
        return ("srcube.OnnxGraph", self.sha256)


_SESSIONS: dict[tuple[str, str, int], Any] = {}
_LOCK = threading.Lock()


def providers(device: str) -> list[Any]:
    """onnxruntime's execution providers for the engine's ``device``: CUDA first where the device is CUDA and the
    installed onnxruntime has its provider, then the CPU."""
    import onnxruntime as ort

    if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return [("CUDAExecutionProvider", {"device_id": torch.cuda.current_device()}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def session(graph: OnnxGraph, device: str, threads: int) -> Any:
    """The onnxruntime session of ``graph`` on ``device`` with ``threads`` CPU threads, made once per process."""
    key = (graph.sha256, device, int(threads))
    with _LOCK:
        found = _SESSIONS.get(key)
        if found is None:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = max(1, int(threads))
            options.inter_op_num_threads = 1
            options.log_severity_level = 3  # its notices about unused initializers say nothing to a user
            found = ort.InferenceSession(graph.data, options, providers=providers(device))
            _SESSIONS[key] = found
        return found


class OnnxRunner:
    """The engine's model for one task: the graph's session called like the single-image torch model,
    ``(N, C, H, W)`` tensors in, ``(N, C, sH, sW)`` out, bands folded into the batch for a band-agnostic graph."""

    multi_frame = False
    tile_local = True

    def __init__(self, graph: OnnxGraph, sess: Any, device: str) -> None:
        meta = graph.metadata
        self.graph, self.session, self.device = graph, sess, device
        self.name = str(meta.get("model", "onnx"))
        self.scale, self.channels = int(meta["scale"]), int(meta["channels"])
        self.input = str(meta["inputs"][0])

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        (x,) = inputs
        b, c, h, w = x.shape
        if min(h, w) < self.graph.min_size:
            raise InvalidDataError(f"the exported graph of {self.name} takes at least {self.graph.min_size} x "
                                   f"{self.graph.min_size} input pixels, got a tile of {h} x {w}: use engine='torch'")
        arr = x.detach().to("cpu", torch.float32).numpy()
        if self.channels == 1 and c > 1:  # band-agnostic: each band is one item of the batch
            arr = arr.reshape(b * c, 1, h, w)
        y = self.session.run(None, {self.input: np.ascontiguousarray(arr)})[0]
        return torch.from_numpy(y.reshape(b, c, h * self.scale, w * self.scale)).to(self.device)


def onnx_graph(local: SRModel, path: str | Path | None = None) -> OnnxGraph:
    """The graph ``engine="onnx"`` runs for the single-image model ``local``: the file at ``path``, checked to be
    ``local``'s (single-image, same scale, the same weights where both say which), or ``local`` exported into the
    cache of exported graphs (once per model: :func:`srcube.models.onnx.cached_export`).

    Raises OnnxUnavailableError without onnxruntime (or, to export, onnx and onnxscript), OnnxExportError when the
    model cannot be exported or the file is not an srcube graph, IncompatibleWeightsError for another model's graph.
    """
    from srcube.models import onnx

    try:
        if path is None:
            onnx.check_available()
            path, _ = onnx.cached_export(local)
        else:
            _check_runtime()
            if not Path(path).is_file():
                raise OnnxExportError(f"onnx_path {str(path)!r} is not a file: give the .onnx file that srcube "
                                      "export-onnx wrote, or leave it out to export the model into the cache")
        graph = OnnxGraph.read(path)
    except models.ModelError as exc:
        raise as_pipeline_error(exc) from None
    _check_graph(graph, local, path)
    return graph


def _check_runtime() -> None:
    """OnnxUnavailableError unless onnxruntime can be imported."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise OnnxUnavailableError("engine='onnx' needs onnxruntime (not installed): install srcube's onnx extra "
                                   "(pip install 'srcube[onnx]'; onnxruntime-gpu for CUDA), or use engine='torch'"
                                   ) from None


def _check_graph(graph: OnnxGraph, local: SRModel, path: str | Path) -> None:
    """IncompatibleWeightsError unless the graph is of ``local``: a single-image graph of its architecture, scale
    and channels, exported from the same weights (or, both, from none)."""
    meta = graph.metadata
    if meta.get("kind") != "single-image":
        raise IncompatibleWeightsError(f"{path} is the graph of a {meta.get('kind')} model ({meta.get('model')}); "
                                       "super_resolve runs single-image graphs")
    if (meta.get("architecture"), int(meta.get("scale", 0)), int(meta.get("channels", 0))) != (
            local.name, local.scale, local.channels):
        raise IncompatibleWeightsError(f"{path} is the graph of {meta.get('model')} ({meta.get('architecture')} "
                                       f"x{meta.get('scale')}, {meta.get('channels')} channel(s)), the model is "
                                       f"{local.name} x{local.scale}, {local.channels} channel(s)")
    want = str(getattr(getattr(local, "weights_meta", None), "sha256", "") or "")
    have = str(meta.get("weights_sha256") or "")
    if want != have:
        raise IncompatibleWeightsError(
            f"{path} was exported from " + (f"weights {meta.get('model')} (sha256 {have[:16]}...)" if have else
                                            "a model without a weights file")
            + ", the model runs " + (f"weights with sha256 {want[:16]}..." if want else "no weights file")
            + ": export the model's graph (srcube export-onnx) or leave onnx_path out to export it into the cache")
