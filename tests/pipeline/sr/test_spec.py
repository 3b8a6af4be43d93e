"""What planning knows about a run's inference before any runs: the model resolved, the projection, the tiles."""

import ast
import subprocess
import sys

import pytest

from srcube import models
from srcube.models.consistency import Projection
from srcube.pipeline.errors import InvalidOptionError, UnknownModelError, UnsupportedScaleError
from srcube.pipeline.sr.spec import (
    DEFAULT_TILE,
    ResolvedModel,
    resolve_model,
    tile_margin,
    tile_spec,
    wants_consistency,
)
from tests.support.helpers import REPO, TINY


def test_who_gets_the_projection():
    assert wants_consistency(models.build("lrnet", scale=4), None) is True
    assert wants_consistency(models.build("lrnet", scale=4), False) is False
    for name in ("nearest", "bilinear", "bicubic", "lanczos"):
        assert wants_consistency(models.build(name, scale=4), None) is False
        assert wants_consistency(models.build(name, scale=4), True) is True
    hrn = models.build("highresnet", scale=3, **TINY["highresnet"])
    assert wants_consistency(hrn, None) is False
    with pytest.raises(InvalidOptionError, match="multi-frame"):
        wants_consistency(hrn, True)
    with pytest.raises(InvalidOptionError, match="True, False or None"):
        wants_consistency(models.build("lrnet", scale=4), "yes")  # type: ignore[arg-type]


def test_every_form_of_a_model_resolves_and_its_scale_is_checked():
    spec = models.ModelSpec.of("bicubic", scale=3)
    ref, local = resolve_model(spec, 3)
    assert ref is spec and local.scale == 3 and local.name == "bicubic"
    obj = models.build("bilinear", scale=2)
    assert resolve_model(obj, None) == (obj, obj)
    resolved = ResolvedModel(*resolve_model("nearest", 4))
    assert resolve_model(resolved, 4) == (resolved.ref, resolved.local)  # resolved once, handed back as it is
    for given in (spec, obj, resolved):
        with pytest.raises(UnsupportedScaleError, match="not 8"):
            resolve_model(given, 8)
    with pytest.raises(UnknownModelError, match=r"known names: .*bicubic"):
        resolve_model(3.5, None)  # type: ignore[arg-type]
    with pytest.raises(UnknownModelError, match="neither a model name"):
        resolve_model("../weights/x", None)


def test_tiles_borrow_the_receptive_field_and_the_projection_reach():
    net = models.build("bicubic", scale=4)
    projection = Projection.for_sensor("sentinel-2", 4)
    assert tile_margin(net, None) == net.receptive_field
    assert tile_margin(net, projection) == net.receptive_field + projection.margin
    assert tile_margin(net, None, margin=40) == 40  # a larger margin asked for wins
    spec = tile_spec(None, 6, 4, None)
    assert (spec.tile, spec.margin, spec.scale) == (DEFAULT_TILE, 6, 4)
    assert tile_spec(None, 200, 4, None).tile > DEFAULT_TILE  # a deep model's margin: larger tiles
    assert tile_spec(64, 6, 4, None).tile == 64
    with pytest.raises(InvalidOptionError, match=r"tile 8 is smaller than .* 12 input pixels; use tile >= 12$"):
        tile_spec(8, 12, 4, None)
    with pytest.raises(InvalidOptionError, match=r"consistency projection.*or consistency=False"):
        tile_spec(8, 12, 4, projection)


def _module_imports(path) -> set[str]:
    """The modules ``path`` imports when it is imported: its top-level imports, not those inside functions or
    under ``if TYPE_CHECKING``."""
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return found


def test_planning_does_not_walk_into_inference():
    """The planning side reads the model, projection and tiles from this light module, not from the inference
    module (which builds graphs and imports torch, xarray and dask)."""
    heavy = ("torch", "xarray", "dask", "odc", "rasterio", "srcube.pipeline.sr.infer", "srcube.pipeline.sr.engine")
    spec = _module_imports(REPO / "pipeline" / "sr" / "spec.py")
    assert not {m for m in spec if m.split(".")[0] in heavy or m.startswith(heavy)}, spec
    for planner in ("plan.py", "request.py", "options.py", "params.py"):
        imported = _module_imports(REPO / "pipeline" / planner)
        assert not {m for m in imported if m.startswith(("srcube.pipeline.sr.infer", "srcube.pipeline.sr.engine"))}, \
            planner


def test_the_planning_helpers_import_no_model_or_array_library():
    code = ("import sys, srcube.pipeline.sr.spec\n"
            "print(sorted(m for m in ('torch', 'xarray', 'dask', 'odc', 'rasterio', 'srcube.pipeline.sr.infer') "
            "if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
