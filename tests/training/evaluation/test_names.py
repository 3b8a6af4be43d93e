"""The face of the evaluation package (training/evaluation/__init__.py): every name callers imported from
``srcube.training.evaluation`` before it was split is there, the same object as in its module, and the
type checker's list is the runtime's (srcube._lazy reads it)."""

from __future__ import annotations

import importlib

from srcube import _lazy
from srcube.training import evaluation

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
    homes = _lazy.declared(evaluation.__file__)  # the face's one list (its TYPE_CHECKING block)
    assert set(homes) == BEFORE
    for name, home in homes.items():
        assert home.startswith("srcube.training.evaluation."), home
        assert getattr(evaluation, name) is getattr(importlib.import_module(home), name), name
    assert BEFORE <= set(dir(evaluation))

