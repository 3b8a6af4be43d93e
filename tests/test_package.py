"""The package as installed: one ``srcube`` namespace, no generic top-level packages, tests that stand alone."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from tests.support.helpers import REPO


def _python(code: str, cwd) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_import_srcube_works_from_any_directory(tmp_path):
    proc = _python("import srcube, srcube.pipeline, srcube.models, srcube.training, srcube.flows, srcube.cli\n"
                   "print(srcube.run_region.__module__, srcube.super_resolve.__module__, srcube.__version__)", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[:2] == ["srcube.pipeline.region", "srcube.pipeline.sr.infer"]


@pytest.mark.parametrize("name", ["pipeline", "models", "training", "flows", "cli"])
def test_no_generic_top_level_package_is_installed(name, tmp_path):
    proc = _python(f"import {name}", tmp_path)
    assert proc.returncode != 0 and f"No module named '{name}'" in proc.stderr


def test_the_public_api_is_the_pipeline_api():
    import srcube
    from srcube import pipeline

    assert set(srcube.__all__) == set(pipeline.__all__)
    assert all(getattr(srcube, n) is getattr(pipeline, n) for n in srcube.__all__)


def test_every_typed_error_and_warning_is_public():
    """Users catch srcube's errors as ``srcube.<Name>``: every one the code defines is exported."""
    import srcube
    from srcube.pipeline import errors

    typed = {n for n, c in vars(errors).items()
             if isinstance(c, type) and issubclass(c, (errors.SrcubeError, errors.SrcubeWarning))}
    assert typed - set(srcube.__all__) == set()


def _test_modules():
    return sorted((REPO / "tests").rglob("test_*.py"))


def test_no_test_module_imports_another_test_module():
    offenders = []
    for path in _test_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            modules = []
            if isinstance(node, ast.ImportFrom):
                base = ("." * node.level) + (node.module or "")
                modules = [base]
                if node.level or base == "tests" or base.startswith("tests."):  # from tests.x import test_y
                    modules += [f"{base}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            if any(m.split(".")[-1].startswith("test_") or m.split(".")[-1] == "conftest" for m in modules):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, offenders


def test_tests_mirror_the_packages():
    """Every test module sits in the folder of the package it tests (tests/pipeline/sr/... for
    srcube.pipeline.sr), and every package folder under tests/ exists in the code."""
    roots = {"pipeline", "models", "training", "flows", "cli"}
    for path in _test_modules():
        parts = path.relative_to(REPO / "tests").parts[:-1]
        if not parts:
            continue  # tests of the package as a whole (this module)
        if parts[0] == "k8s":
            assert (REPO / "k8s").is_dir()
            continue
        assert parts[0] in roots, path
        assert (REPO.joinpath(*parts) / "__init__.py").exists(), f"{path}: no package {'/'.join(parts)}"
