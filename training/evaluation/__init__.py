"""The evaluation srcube selects and reports models with: Wald protocol on real scenes split by place,
PSNR against the reference's own peak, block-bootstrap intervals, a robustness table over degradations,
and the opensr-test consistency and correctness metrics.

Every number a table shows follows the conventions stated in the module that computes it:

* :mod:`~training.evaluation.stats`: PSNR against the reference band's own peak, SSIM's data range, the
  block-bootstrap intervals (paired for gains, stratified by scene for means);
* :mod:`~training.evaluation.opensr`: the opensr-test consistency and correctness metrics, and where they
  differ from opensr-test;
* :mod:`~training.evaluation.score`: one scene scored, every band against the baselines; the summary;
* :mod:`~training.evaluation.scenes`: the references: real scenes of a split, any raster, valid windows;
* :mod:`~training.evaluation.wald`: the Wald protocol (the degradation :data:`WALD`), the robustness
  table, a split;
* :mod:`~training.evaluation.probav`: PROBA-V multi-frame, the Kelvins metric on Wald pairs;
* :mod:`~training.evaluation.report`: the test report next to the weights and the markdown tables.

Splits (:func:`evaluate_split`) come from :mod:`training.datasets.scenes`: validation is for model
selection; the test split is reported once per weights, next to them (:func:`write_test_report`,
``models/weights/NAME.test.json``), and the model card and the README table are generated from that
file (:mod:`training.card`).

The names below are importable from here as from the module that defines them; each module is imported
on first use (PEP 562), so importing one of them does not import the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# every public name of the evaluation, listed once: for the type checker, and read by srcube._lazy at run time
if TYPE_CHECKING:
    from srcube.training.evaluation.opensr import OPENSR_BORDER as OPENSR_BORDER
    from srcube.training.evaluation.opensr import OPENSR_LAMBDA as OPENSR_LAMBDA
    from srcube.training.evaluation.opensr import OPENSR_TEMPERATURE as OPENSR_TEMPERATURE
    from srcube.training.evaluation.opensr import OPENSR_UPSAMPLE as OPENSR_UPSAMPLE
    from srcube.training.evaluation.opensr import consistency as consistency
    from srcube.training.evaluation.opensr import correctness as correctness
    from srcube.training.evaluation.opensr import downsample_antialias as downsample_antialias
    from srcube.training.evaluation.opensr import match_histogram as match_histogram
    from srcube.training.evaluation.opensr import phase_shift as phase_shift
    from srcube.training.evaluation.opensr import spectral_angle as spectral_angle
    from srcube.training.evaluation.opensr import upsample_bilinear as upsample_bilinear
    from srcube.training.evaluation.probav import evaluate_probav as evaluate_probav
    from srcube.training.evaluation.probav import evaluate_probav_split as evaluate_probav_split
    from srcube.training.evaluation.report import REPORT_FORMAT as REPORT_FORMAT
    from srcube.training.evaluation.report import probav_markdown as probav_markdown
    from srcube.training.evaluation.report import report_path as report_path
    from srcube.training.evaluation.report import robustness_markdown as robustness_markdown
    from srcube.training.evaluation.report import rows_markdown as rows_markdown
    from srcube.training.evaluation.report import scenes_markdown as scenes_markdown
    from srcube.training.evaluation.report import split_markdown as split_markdown
    from srcube.training.evaluation.report import summary_markdown as summary_markdown
    from srcube.training.evaluation.report import write_test_report as write_test_report
    from srcube.training.evaluation.scenes import IncompatibleSceneError as IncompatibleSceneError
    from srcube.training.evaluation.scenes import SceneData as SceneData
    from srcube.training.evaluation.scenes import image_data as image_data
    from srcube.training.evaluation.scenes import scene_data as scene_data
    from srcube.training.evaluation.scenes import split_scenes as split_scenes
    from srcube.training.evaluation.scenes import valid_window as valid_window
    from srcube.training.evaluation.score import BandRow as BandRow
    from srcube.training.evaluation.score import SceneResult as SceneResult
    from srcube.training.evaluation.score import Score as Score
    from srcube.training.evaluation.score import compare as compare
    from srcube.training.evaluation.score import summarize as summarize
    from srcube.training.evaluation.stats import PEAK_CONVENTION as PEAK_CONVENTION
    from srcube.training.evaluation.stats import ArrayLike as ArrayLike
    from srcube.training.evaluation.stats import Bootstrap as Bootstrap
    from srcube.training.evaluation.stats import block_sse as block_sse
    from srcube.training.evaluation.stats import interval as interval
    from srcube.training.evaluation.stats import own_peak as own_peak
    from srcube.training.evaluation.stats import psnr_own_peak as psnr_own_peak
    from srcube.training.evaluation.stats import resample_counts as resample_counts
    from srcube.training.evaluation.wald import WALD as WALD
    from srcube.training.evaluation.wald import SplitResult as SplitResult
    from srcube.training.evaluation.wald import evaluate_split as evaluate_split
    from srcube.training.evaluation.wald import evaluate_wald as evaluate_wald
    from srcube.training.evaluation.wald import robustness_table as robustness_table


from srcube import _lazy

__getattr__, __dir__ = _lazy.attach(__name__, _lazy.declared(__file__))
