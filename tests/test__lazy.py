"""The lazy package faces (srcube/_lazy.py): ``import srcube`` imports no scientific stack, and every public name
is the very object of the module that defines it, imported on first use."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

from srcube import _lazy

#: the stacks `import srcube` must not import (each costs seconds of CPU)
HEAVY = ("torch", "xarray", "odc.stac", "odc.geo", "prefect", "rasterio", "dask", "distributed", "zarr", "pandas",
         "safetensors", "onnx")
#: the faces: package -> its public names' modules are read from its own TYPE_CHECKING block
FACES = ["srcube.pipeline", "srcube.models", "srcube.training.datasets"]


def _fresh(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; it leaves a JSON document in ``out``."""
    proc = subprocess.run([sys.executable, "-c", f"import json, sys\nout = {{}}\n{code}\nprint(json.dumps(out))"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_import_srcube_imports_no_scientific_stack():
    out = _fresh(f"import srcube\nout['import'] = [m for m in {HEAVY!r} if m in sys.modules]\n"
                 # the typed errors and the version are cheap too: users catch errors without the stack
                 "errors = [n for n in srcube.__all__ if n.endswith(('Error', 'Warning'))]\n"
                 "out['errors'] = len([getattr(srcube, n) for n in errors])\n"
                 "out['version'] = srcube.__version__\n"
                 "from srcube import models\n"
                 "out['models'] = (models.UnknownModelError.__name__, len(models.list_models()))\n"
                 f"out['after'] = [m for m in {HEAVY!r} if m in sys.modules]")
    assert out["import"] == [] and out["after"] == [], out
    assert out["errors"] >= 40 and out["models"][1] >= 10


def test_a_public_name_imports_its_module_then():
    out = _fresh(f"import srcube\nsrcube.run_region\nout['heavy'] = [m for m in {HEAVY!r} if m in sys.modules]")
    assert "xarray" in out["heavy"]  # the face defers the import, it does not hide it


@pytest.mark.parametrize("face", FACES)
def test_every_public_name_is_the_object_of_its_defining_module(face):
    module = importlib.import_module(face)
    names = _lazy.declared(module.__file__)
    assert set(names) <= set(module.__all__) and set(dir(module)) >= set(module.__all__)
    for name, where in names.items():
        assert getattr(module, name) is getattr(importlib.import_module(where), name), name


def test_srcube_hands_over_the_pipeline_names():
    import srcube
    from srcube.pipeline import options, region
    from srcube.pipeline.sr import infer

    assert srcube.run_region is region.run_region and srcube.RunOptions is options.RunOptions
    assert srcube.super_resolve is infer.super_resolve
    namespace: dict = {}
    exec("from srcube import *", namespace)
    assert {n for n in namespace if not n.startswith("__")} | {"__version__"} == set(srcube.__all__)


def test_unknown_names_and_missing_submodules_are_attribute_errors():
    import srcube
    from srcube import models

    with pytest.raises(AttributeError, match="module 'srcube' has no attribute 'run_regoin'"):
        srcube.run_regoin  # noqa: B018
    with pytest.raises(AttributeError, match="__wrapped__"):
        models.__wrapped__  # noqa: B018
    assert models.weights is importlib.import_module("srcube.models.weights")  # a submodule, as before


def test_a_face_lists_its_names_as_explicit_reexports(tmp_path):
    face = tmp_path / "face.py"
    face.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from os.path import join as join\n"
                    "    from os import sep\n")
    with pytest.raises(ImportError, match=r"from srcube\.x import name as name"):
        _lazy.declared(str(face))
    face.write_text("from typing import TYPE_CHECKING\n")
    with pytest.raises(ImportError, match="no 'if TYPE_CHECKING:' block"):
        _lazy.declared(str(face))
    face.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from os.path import join as join\n")
    assert _lazy.declared(str(face)) == {"join": "os.path"}
