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


#: package modules without a test module of their own (tests/<folder>/test_<module>.py): why, and the test
#: modules (under tests/) that cover them, found by reading them. A module named here that gets its own test
#: module leaves this table (the test below says so).
COVERED_ELSEWHERE: dict[str, tuple[str, tuple[str, ...]]] = {
    "cli/__main__.py": ("`python -m srcube.cli`: the CLI tests run the command that way", ("cli/test_cli.py",)),
    "cli/commands.py": ("the `srcube` app: one test module per group of commands", (
        "cli/test_cli.py", "cli/test_views.py", "cli/test_verify.py", "cli/test_publish.py", "cli/test_untrusted.py")),
    "cli/training.py": ("`srcube train`, `ship` and `evaluate`, with the training they drive", (
        "training/test_training.py", "training/evaluation/test_wald.py")),
    "flows/region.py": ("the flow against a real Prefect server: runs, the failure drill, deployments", (
        "flows/test_flows.py", "flows/test_flow_results.py", "flows/test_flow_settings.py")),
    "flows/area.py": ("the area flow against a real Prefect server", ("flows/test_area_flow.py",)),
    "flows/settings.py": ("the flows' settings from the environment", ("flows/test_flow_settings.py",)),
    "flows/serve.py": ("a served deployment triggered with run_deployment (marked slow: -m slow runs it)",
                       ("flows/test_flows.py",)),
    "models/base.py": ("SRModel and ModelSpec, through every model and the spec's stable token", (
        "models/test_models.py", "models/test_model_zoo.py")),
    "models/registry.py": ("names, kinds, scales and errors of the registry", (
        "models/test_models.py", "models/test_model_zoo.py")),
    "models/weights.py": ("weights round trips and checks, and the shipped weights", (
        "models/test_model_zoo.py", "models/test_shipped_weights.py")),
    "models/errors.py": ("raised by the registry and the weights checks, re-raised as pipeline errors", (
        "models/test_model_zoo.py", "pipeline/test_bad_input.py")),
    "models/interp.py": ("the baselines: shapes, no half-pixel shift, measured reach, Lanczos", (
        "models/test_models.py", "models/test_model_zoo.py")),
    "models/srcnn.py": ("the architectures together: shapes, measured receptive field, determinism, weights",
                        ("models/test_model_zoo.py",)),
    "models/elsr.py": ("the architectures together (see models/srcnn.py)", ("models/test_model_zoo.py",)),
    "models/sisr.py": ("the architectures together, the residual start and the discriminator",
                       ("models/test_model_zoo.py",)),
    "models/lrnet.py": ("the architectures together (see models/srcnn.py)", ("models/test_model_zoo.py",)),
    "models/highresnet.py": ("the architectures together, fewer and missing views, the clear median", (
        "models/test_model_zoo.py", "pipeline/sr/test_engine.py")),
    "models/sharpen.py": ("the band sharpeners take two inputs: tested with the sharpening that runs them",
                          ("pipeline/sr/test_sharpen.py",)),
    "models/consistency.py": ("the projection on real pixels, tiled, and in the cube",
                              ("pipeline/sr/test_consistency.py",)),
    "models/profile.py": ("multiply-accumulates per output pixel, counted by hand", ("models/test_model_zoo.py",)),
    "pipeline/errors.py": ("the typed errors: the table of bad inputs raises them, every one is public", (
        "pipeline/test_bad_input.py", "test_package.py")),
    "pipeline/options.py": ("every option's checks, as CLI options, in the flow's schema and in REFERENCE.md", (
        "pipeline/test_bad_input.py", "cli/test_cli.py", "flows/test_flow_settings.py", "test_docs.py")),
    "pipeline/request.py": ("a run's request: built by the flow, recorded in the cube, run again by repair", (
        "flows/test_flow_settings.py", "flows/test_flows.py", "pipeline/write/test_verify.py")),
    "pipeline/plan.py": ("the checks before any work: the table of bad inputs", ("pipeline/test_bad_input.py",)),
    "pipeline/load.py": ("a run's input stack: from a search, from the stack cache, from a Kelvins imgset", (
        "pipeline/test_region.py", "pipeline/assemble/test_stackcache.py", "pipeline/sensors/test_probav.py")),
    "pipeline/mosaic.py": ("open_area over the cubes of an area, across zones", ("pipeline/test_area.py",)),
    "pipeline/redact.py": ("credentials kept out of logs, errors and attributes", ("pipeline/test_reliability.py",)),
    "pipeline/reference.py": ("REFERENCE.md generated from the code and compared", ("test_docs.py",)),
    "pipeline/assemble/grid.py": ("the output grid, with the tile arithmetic it must agree with",
                                  ("pipeline/sr/test_grid_tiling.py",)),
    "pipeline/sr/tiling.py": ("tile arithmetic with the grid, property tests", ("pipeline/sr/test_grid_tiling.py",)),
    "pipeline/sr/sharpening.py": ("named after its public function, sharpen", ("pipeline/sr/test_sharpen.py",)),
    "pipeline/search/catalog.py": ("search through catalog profiles: the sample, replayed answers, deadlines", (
        "pipeline/search/test_sample_catalog.py", "pipeline/search/test_catalog_answers.py",
        "pipeline/search/test_timeouts.py")),
    "pipeline/sensors/base.py": ("the sensor interface, through its two sensors", (
        "pipeline/sensors/test_sensors.py", "pipeline/sensors/test_probav.py")),
    "pipeline/sensors/bands.py": ("band vocabularies and asset keys", (
        "pipeline/sensors/test_sensors.py", "pipeline/search/test_sample_catalog.py")),
    "pipeline/sensors/sentinel2.py": ("Sentinel-2's bands, SCL and the offset table", (
        "pipeline/sensors/test_sensors.py", "pipeline/assemble/test_harmonize.py")),
    "pipeline/testing/sample.py": ("the sample archive: layout, SCL classes, seeding, realism",
                                   ("pipeline/search/test_sample_catalog.py",)),
    "pipeline/testing/sample_probav.py": ("the synthetic PROBA-V archive and Kelvins layout",
                                          ("pipeline/sensors/test_probav.py",)),
    "pipeline/testing/browser.py": ("the DevTools driver of the map page's browser test, run by it",
                                    ("cli/test_view.py",)),
    "pipeline/testing/stac_server.py": ("the loopback STAC API every sample test reads; rehosted catalogs", (
        "pipeline/search/test_sample_catalog.py", "pipeline/search/test_assets.py")),
    "pipeline/write/stac.py": ("a cube's STAC documents, and what they refuse to carry", (
        "pipeline/write/test_stac_untrusted.py", "pipeline/test_region.py")),
    "pipeline/write/publish.py": ("publishing into a real STAC API with transactions", (
        "cli/test_publish.py", "pipeline/write/test_stac_untrusted.py")),
    "pipeline/write/areaindex.py": ("an area's index, written by run_area, read by open_area, published", (
        "pipeline/test_area.py", "cli/test_publish.py")),
    "pipeline/write/export.py": ("`srcube export --cog`, read back with rasterio", ("cli/test_views.py",)),
    "pipeline/write/overviews.py": ("overviews read by the views, grown by appends", (
        "cli/test_views.py", "pipeline/test_append_drill.py")),
    "training/config.py": ("configurations and their errors", ("training/test_training.py",)),
    "training/trainer.py": ("training runs, resumes, every recipe kind", ("training/test_training.py",)),
    "training/losses.py": ("losses and metrics together", ("training/test_metrics_losses.py",)),
    "training/metrics.py": ("losses and metrics together", ("training/test_metrics_losses.py",)),
    "training/card.py": ("model cards and the README's generated tables", (
        "training/evaluation/test_report.py", "models/test_shipped_weights.py")),
    "training/evaluate.py": ("`srcube evaluate` on an image and on a config's data", ("training/test_training.py",)),
    "training/datasets/fixtures.py": ("the dataset readers on these fixtures", ("training/test_training.py",)),
    "training/datasets/probav.py": ("the Kelvins dataset", ("training/test_training.py",)),
    "training/datasets/sen2venus.py": ("the Sen2Venµs reader", ("training/test_training.py",)),
    "training/datasets/worldstrat.py": ("the WorldStrat reader and split", ("training/test_training.py",)),
    "training/datasets/wald.py": ("Wald pairs on the sample and on real frames", ("training/test_training.py",)),
    "training/datasets/scenes.py": ("the real scenes and their splits by place", (
        "training/evaluation/test_scenes.py", "models/test_shipped_weights.py")),
}

#: package modules that no test runs yet, each with why: the gaps, stated (fill them, then move the line above)
UNTESTED: dict[str, str] = {
    "training/datasets/real.py": "samples from the real scenes of a split: only `srcube train` on the shipped "
                                 "recipes runs it, with the real scenes, which the tests do not have",
    "training/ship.py": "`srcube ship`: only its output is checked (models/test_shipped_weights.py reads the "
                        "shipped cards and test reports); the command itself runs on trained weights",
}


def _package_modules() -> list[str]:
    roots = ("srcube", "pipeline", "models", "training", "flows", "cli")
    return sorted(p.relative_to(REPO).as_posix() for root in roots for p in (REPO / root).rglob("*.py")
                  if p.name != "__init__.py")


def test_every_module_has_a_test_module_or_says_what_covers_it():
    """tests/<folder>/test_<module>.py for each package module (tests/test_<module>.py for srcube/), or a line in
    COVERED_ELSEWHERE naming the test modules that cover it, or in UNTESTED saying why nothing does."""
    modules = _package_modules()
    own = {m for m in modules if (REPO / "tests" / m).with_name("test_" + m.split("/")[-1]).exists()
           or (m.startswith("srcube/") and (REPO / "tests" / ("test_" + m.split("/")[-1])).exists())}
    listed = set(COVERED_ELSEWHERE) | set(UNTESTED)
    assert set(COVERED_ELSEWHERE).isdisjoint(UNTESTED)
    alone = [m for m in modules if m not in own and m not in listed]
    assert not alone, f"no test module of their own: {alone}; add one, or a line to COVERED_ELSEWHERE (or UNTESTED)"
    assert not listed - set(modules), f"listed modules that do not exist: {sorted(listed - set(modules))}"
    assert not listed & own, f"listed modules that now have their own test module: {sorted(listed & own)}"
    for module, (why, tests) in COVERED_ELSEWHERE.items():
        assert why and tests, module
        assert all((REPO / "tests" / t).is_file() for t in tests), (module, tests)
    assert all(UNTESTED.values())
