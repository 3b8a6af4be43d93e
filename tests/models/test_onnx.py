"""ONNX export: every shipped weights file with onnxruntime parity at three sizes, the architectures, the metadata,
the cache key, and typed errors (never the exporter's traceback) for what cannot be exported."""

import copy
import json
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from srcube import models
from srcube.models.base import SRModel
from srcube.models.onnx import (
    PARITY_SIZES,
    cache_key,
    cached_export,
    check_parity,
    example_inputs,
    export_onnx,
    read_metadata,
)
from tests.support.helpers import TINY, randomize

pytest.importorskip("onnxruntime", reason="onnx extra not installed")

SHIPPED = sorted(models.shipped_weights())


@pytest.fixture(scope="module", params=SHIPPED)
def shipped(request: pytest.FixtureRequest, onnx_cache):
    """(name, model, path, parity report) of each shipped weights file: exported once per session into the session's
    cache of graphs (where tests/pipeline/sr/test_onnxrt.py finds the default model's), compared with torch here."""
    model = models.load_model(request.param)
    path, report = cached_export(model)  # exported here: with the parity check; found in the cache: checked now
    return request.param, model, path, {**(report or check_parity(model, path)), **read_metadata(path)}


def test_every_shipped_weights_file_exports_with_onnxruntime_parity(shipped):
    name, _, path, report = shipped
    meta = models.weights.read_meta(models.shipped_weights()[name])
    checks = report["checks"]
    # three sizes: batch 1 and 2, square and not, none a multiple of a tile or of the export example (24 x 28)
    assert [c["input_shape"][0] for c in checks] == [n for n, _, _ in PARITY_SIZES]
    for check, (_, h, w) in zip(checks, PARITY_SIZES, strict=True):
        assert check["input_shape"][-2:] == [h, w]
        assert check["output_shape"][-2:] == [h * meta.scale, w * meta.scale]
        assert check["max_abs_diff"] <= 1e-4, (name, check)
    kind = {"highresnet": "multi-frame", "dsen2": "sharpen"}.get(meta.architecture, "single-image")
    assert report["kind"] == kind
    assert report["inputs"] == {"single-image": ["x"], "multi-frame": ["views", "masks"],
                                "sharpen": ["low", "guide"]}[kind]
    projected = meta.config.get("project") is not None
    assert report["min_size"] == (13 if projected else 2)  # the projection's banded inverse: axes > 2 x 6 pixels
    doc = read_metadata(path)
    assert (doc["model"], doc["weights_sha256"], doc["scale"], doc["kind"]) == (name, meta.sha256, meta.scale, kind)


def test_the_shipped_graph_holds_the_projection_as_constants(shipped):
    """No linear algebra left in the graph: the projection's banded inverse is initializers, nothing inverted."""
    import onnx

    name, _, path, _ = shipped
    graph = onnx.load(str(path)).graph
    ops = {n.op_type for n in graph.node}
    assert not ops & {"Inverse", "LinalgInv"} and not any("linalg" in n.op_type.lower() for n in graph.node)
    for tensor in graph.input:  # batch, height and width dynamic (named), the other axes fixed
        dims = tensor.type.tensor_type.shape.dim
        assert all(dims[i].dim_param and not dims[i].dim_value for i in (0, -2, -1)), (name, tensor)
        assert all(d.dim_value and not d.dim_param for d in dims[1:-2]), (name, tensor)


def test_projection_layer_gives_the_projection_result_and_leaves_the_weights_as_they_are():
    from srcube.models.consistency import Projection, ProjectionLayer

    proj = Projection.for_sensor("sentinel-2", 3)
    layer = ProjectionLayer(proj)
    g = torch.Generator().manual_seed(0)
    for h, w in ((13, 40), (7, 29), (31, 12)):  # the banded inverse on long axes, the dense one on short ones
        lr = torch.rand(2, 1, h, w, generator=g, dtype=torch.float64)
        sr = torch.rand(2, 1, 3 * h, 3 * w, generator=g, dtype=torch.float64)
        assert torch.equal(layer(lr, sr), proj.apply(lr, sr)), (h, w)
    assert layer.state_dict() == {} and {n for n, _ in layer.named_buffers()} == {
        f"{p}_{a}" for p in ("kernel", "top", "bottom") for a in "yx"}
    net = models.build("lrnet", scale=3, features=8, blocks=1, project="sentinel-2")
    assert not any("projector" in k for k in net.state_dict())  # weights files are unchanged


# one interpolation baseline and one network in the default run (the shipped files cover lrnet with the projection,
# HighRes-net and the learned sharpener); the rest with -m slow
_SLOW_ONNX = pytest.mark.slow  # each export + onnxruntime session costs seconds


@pytest.mark.parametrize("name", ["lanczos", "esrgan",
                                  *(pytest.param(n, marks=_SLOW_ONNX) for n in ("bicubic", "elsr", "srcnn", "srgan",
                                                                                 "lrnet", "highresnet"))])
def test_architectures_export_with_parity(tmp_path, name):
    learned = name not in ("bicubic", "bilinear", "nearest", "lanczos")
    m = models.build(name, scale=3, **TINY[name])
    report = export_onnx(randomize(m, std=0.1) if learned else m, tmp_path / f"{name}.onnx")
    assert report["max_abs_diff"] <= 1e-4
    assert report["output_shape"][-2:] == [93, 111]  # 31 x 37 input: other size than the export example


@pytest.mark.slow
@pytest.mark.parametrize("config", [{"window": None}, {"window": 5}])
def test_the_high_pass_sharpener_exports_with_parity(tmp_path, config):
    """hpf: the tile-wide and the windowed regression (their linear solves unrolled in the graph)."""
    report = export_onnx(models.build("hpf", scale=2, **config), tmp_path / "hpf.onnx")
    assert report["kind"] == "sharpen" and report["max_abs_diff"] <= 1e-4


class _Inverting(SRModel):
    """Bicubic times a 2 x 2 inverse made from the input: the operation the exporter met in the projection."""

    name = "inverting"

    @property
    def receptive_field(self) -> int:
        return 2

    def sr(self, x: torch.Tensor) -> torch.Tensor:
        m = torch.eye(2) + x.mean() * torch.ones(2, 2)
        return F.interpolate(x, scale_factor=self.scale, mode="bicubic") * torch.linalg.inv(m)[0, 0]


class _Branching(_Inverting):
    """A forward pass that branches on the input's values, which no graph holds."""

    name = "branching"

    def sr(self, x: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(x, scale_factor=self.scale, mode="bicubic")
        return up * 2 if bool(x.mean() > 0.5) else up


def test_what_cannot_be_exported_is_a_typed_error_saying_why(tmp_path):
    from srcube.pipeline.errors import OnnxExportError, SrcubeError, as_pipeline_error

    out = tmp_path / "m.onnx"
    with pytest.raises(models.OnnxExportError, match=r"inverting cannot be exported to ONNX: the ONNX exporter has no "
                                                      r"translation of aten\.linalg_inv_ex"):
        export_onnx(_Inverting(scale=2), out)
    with pytest.raises(models.OnnxExportError, match=r"branches on the input's values \(test_onnx\.py:\d+ in sr\)"):
        export_onnx(_Branching(scale=2), out)
    assert not out.exists()
    twin = as_pipeline_error(models.OnnxExportError("why"))
    assert isinstance(twin, OnnxExportError) and isinstance(twin, SrcubeError) and str(twin) == "why"


def test_a_graph_that_differs_from_torch_is_refused_and_not_kept(tmp_path):
    out = tmp_path / "m.onnx"
    with pytest.raises(models.OnnxExportError, match=r"differs from torch by .* \(tolerance 0\)"):
        export_onnx(randomize(models.build("elsr", scale=2), std=0.1), out, tolerance=0.0)
    assert not out.exists()


def test_the_onnx_extra_missing_is_a_typed_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if the extra were not installed
    with pytest.raises(models.OnnxUnavailableError, match=r"needs onnxscript \(not installed\).*srcube\[onnx\]"):
        export_onnx(models.build("bicubic", scale=2), tmp_path / "m.onnx")


def test_cli_exports_and_prints_the_parity_and_errors_without_traceback(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from srcube.cli.commands import app

    runner = CliRunner()
    weights = tmp_path / "elsr-x2"
    models.save_weights(randomize(models.build("elsr", scale=2), std=0.1), weights, trained=True,
                        training={"data": "test"})
    res = runner.invoke(app, ["export-onnx", str(weights) + ".safetensors", str(tmp_path / "e.onnx")],
                        env={"COLUMNS": "220"})
    assert res.exit_code == 0, res.output
    assert res.output.count("max abs diff") == 3 and (tmp_path / "e.onnx").exists()
    assert "single-image: inputs x, any batch, height and width >= 2" in " ".join(res.output.split())
    res = runner.invoke(app, ["export-onnx", "esrgan", str(tmp_path / "x.onnx")])
    assert res.exit_code == 2 and "no trained weights" in res.output
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    res = runner.invoke(app, ["export-onnx", str(weights) + ".safetensors", str(tmp_path / "f.onnx")])
    assert res.exit_code == 2 and "error: ONNX export needs onnxruntime (not installed)" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "f.onnx").exists()


@pytest.mark.slow
def test_cli_exports_the_default_model(tmp_path):
    """The command of issue 24 that failed with a traceback (aten.linalg_inv_ex from the projection)."""
    from typer.testing import CliRunner

    from srcube.cli.commands import app

    res = CliRunner().invoke(app, ["export-onnx", "s2-sisr-x4", str(tmp_path / "m.onnx")], env={"COLUMNS": "220"})
    assert res.exit_code == 0, res.output
    assert res.output.count("max abs diff") == 3 and "height and width >= 13" in " ".join(res.output.split())


def test_the_cache_keys_graphs_by_the_tensors_and_exports_once(tmp_path):
    a = randomize(models.build("elsr", scale=2), std=0.1)
    b = randomize(models.build("elsr", scale=2), seed=1, std=0.1)
    assert cache_key(a) == cache_key(copy.deepcopy(a))  # the same tensors, the same graph
    assert cache_key(a) != cache_key(b) != cache_key(randomize(models.build("elsr", scale=3), seed=1, std=0.1))
    path, report = cached_export(b, cache=tmp_path)
    assert report is not None and report["max_abs_diff"] <= 1e-4 and path.parent == tmp_path
    assert cached_export(b, cache=tmp_path) == (path, None)  # the second time: from the cache
    assert [p.name for p in tmp_path.iterdir()] == [path.name] and path.name.startswith("elsr-")
    assert json.loads(json.dumps(read_metadata(path)))["kind"] == "single-image"


def test_example_inputs_of_every_kind():
    sharp = models.build("hpf", scale=2)
    low, guide = example_inputs(sharp, 2, 5, 7)
    assert low.shape == (2, 6, 5, 7) and guide.shape == (2, 4, 10, 14)
    views, masks = example_inputs(models.build("highresnet", scale=3, **TINY["highresnet"]), 1, 5, 7)
    assert views.shape == (1, 4, 1, 5, 7) and masks.shape == (1, 4, 5, 7)
    assert set(np.unique(masks.numpy())) <= {0.0, 1.0}
