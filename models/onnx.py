"""ONNX export with dynamic batch and spatial axes, and a parity check with onnxruntime (CPU).

Single-image models export as ``x (N, C, H, W) -> y (N, C, sH, sW)`` with ``C`` the model's
``channels`` (1 for band-agnostic models: fold bands into the batch yourself). Multi-frame models
export as ``views (N, T, C, H, W), masks (N, T, H, W) -> y`` with ``T = n_views`` fixed (pad with
zero views and zero masks).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from srcube.models.base import SRModel


def _inputs(model: SRModel, n: int, h: int, w: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    c = model.channels
    if model.multi_frame:
        t = int(getattr(model, "n_views", getattr(getattr(model, "inner", None), "n_views", 1)))
        views = torch.rand(n, t, c, h, w, generator=g) * 0.4
        masks = (torch.rand(n, t, h, w, generator=g) > 0.2).float()
        return views, masks
    return (torch.rand(n, c, h, w, generator=g) * 0.4,)


def export_onnx(model: SRModel, path: str | Path, *, check: bool = True) -> dict[str, Any]:
    """Export ``model`` to ``path``; with ``check``, run it in onnxruntime on an input of another
    batch size and spatial size than the export example and report the max abs difference."""
    import logging

    import onnxruntime as ort

    # the exporter logs one warning per torchvision op it cannot register; torchvision is not used
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    model = model.eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = _inputs(model, 1, 24, 28, seed=0)
    batch, height, width = torch.export.Dim("batch"), torch.export.Dim("height"), torch.export.Dim("width")
    if model.multi_frame:
        names = ["views", "masks"]
        shapes: Any = ({0: batch, 3: height, 4: width}, {0: batch, 2: height, 3: width})
    else:
        names = ["x"]
        shapes = ({0: batch, 2: height, 3: width},)
    with warnings.catch_warnings():
        # torch.export's pytree emits an internal deprecation notice on every export
        warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
        # naming: when two dynamic axes are provably equal the exporter keeps one name and says so
        warnings.filterwarnings("ignore", message="# The axis name: .* will not be used")
        torch.onnx.export(model, example, str(path), input_names=names, output_names=["y"],
                          dynamic_shapes=shapes, dynamo=True, verbose=False, report=False)
    report: dict[str, Any] = {"path": str(path), "bytes": path.stat().st_size, "inputs": names}
    if check:
        probe = _inputs(model, 2, 31, 37, seed=1)
        with torch.inference_mode():
            ref = model(*probe).numpy()
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {n: t.numpy() for n, t in zip(names, probe, strict=True)})[0]
        report["probe_shape"] = list(probe[0].shape)
        report["output_shape"] = list(got.shape)
        report["max_abs_diff"] = float(np.abs(got - ref).max())
    return report
