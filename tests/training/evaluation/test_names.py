"""The face of the evaluation package (training/evaluation/__init__.py): every name callers imported from
``srcube.training.evaluation`` before it was split is there, the same object as in its module, and the
type checker's list is the runtime's."""

from __future__ import annotations

import ast
import importlib

from srcube.training import evaluation
from tests.support.helpers import REPO

#: the public names of training/evaluation.py before it became a package
BEFORE = {
    "ArrayLike", "BandRow", "Bootstrap", "IncompatibleSceneError", "OPENSR_BORDER", "OPENSR_LAMBDA",
    "OPENSR_TEMPERATURE", "OPENSR_UPSAMPLE", "PEAK_CONVENTION", "REPORT_FORMAT", "SceneData", "SceneResult", "Score",
    "SplitResult", "WALD", "block_sse", "compare", "consistency", "correctness", "downsample_antialias",
    "evaluate_probav", "evaluate_probav_split", "evaluate_split", "evaluate_wald", "image_data", "interval",
    "match_histogram", "own_peak", "phase_shift", "probav_markdown", "psnr_own_peak", "report_path",
    "resample_counts", "robustness_markdown", "robustness_table", "rows_markdown", "scene_data", "scenes_markdown",
    "spectral_angle", "split_markdown", "split_scenes", "summarize", "summary_markdown", "upsample_bilinear",
    "valid_window", "write_test_report"}


def test_every_name_of_the_old_module_is_importable_from_the_package():
    homes = evaluation._HOMES
    assert set(homes) == BEFORE
    for name, home in homes.items():
        module = importlib.import_module(f"srcube.training.evaluation.{home}")
        assert getattr(evaluation, name) is getattr(module, name), name
    assert BEFORE <= set(dir(evaluation))


def test_the_type_checkers_names_are_the_runtime_ones():
    tree = ast.parse((REPO / "training" / "evaluation" / "__init__.py").read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING")
    typed = {(node.module.rsplit(".", 1)[-1], a.asname) for node in block.body if isinstance(node, ast.ImportFrom)
             for a in node.names if a.asname == a.name}
    assert typed == {(home, name) for name, home in evaluation._HOMES.items()}

