"""Evidence: does a measure of a pre-trained checkpoint predict its post-fine-tuning score?
(`validate`: measures, cache, correlations with bootstrap intervals, report; scores by hand,
from a JSONL, or read from lmms-eval's results files.)"""

from modalign.evidence.cache import MeasureCache, data_fingerprint, model_identity
from modalign.evidence.caption_loss import CaptionLoss, caption_loss
from modalign.evidence.checkpoints import Checkpoint, read_checkpoints
from modalign.evidence.correlate import (
    MIN_INTERVAL_N,
    STATISTICS,
    bootstrap_intervals,
    correlations,
)
from modalign.evidence.gap_terms import gap_terms
from modalign.evidence.lmms_results import EvalResults, find_eval_results, read_eval_results
from modalign.evidence.lmms_scores import LmmsEvalScores, LmmsScoreTable, lmms_eval_scores
from modalign.evidence.measures import MEASURES, Measure, read_measures
from modalign.evidence.report import measure_figure, plot_measures, plot_scatter, render_markdown
from modalign.evidence.validate import (
    ValidateSettings,
    flag_small_n,
    measure_checkpoint,
    small_groups,
    validate,
)

__all__ = [
    "MEASURES",
    "MIN_INTERVAL_N",
    "STATISTICS",
    "CaptionLoss",
    "Checkpoint",
    "EvalResults",
    "LmmsEvalScores",
    "LmmsScoreTable",
    "Measure",
    "MeasureCache",
    "ValidateSettings",
    "bootstrap_intervals",
    "caption_loss",
    "correlations",
    "data_fingerprint",
    "find_eval_results",
    "flag_small_n",
    "gap_terms",
    "lmms_eval_scores",
    "measure_checkpoint",
    "measure_figure",
    "model_identity",
    "plot_measures",
    "plot_scatter",
    "read_checkpoints",
    "read_eval_results",
    "read_measures",
    "render_markdown",
    "small_groups",
    "validate",
]
