"""Evidence: does a measure of a pre-trained checkpoint predict its post-fine-tuning score?
(`validate`: measures, cache, correlations with bootstrap intervals, report.)"""

from modalign.evidence.cache import MeasureCache, data_fingerprint, model_identity
from modalign.evidence.caption_loss import CaptionLoss, caption_loss
from modalign.evidence.checkpoints import Checkpoint, read_checkpoints
from modalign.evidence.correlate import STATISTICS, bootstrap_intervals, correlations
from modalign.evidence.gap_terms import gap_terms
from modalign.evidence.measures import MEASURES, Measure, read_measures
from modalign.evidence.report import plot_scatter, render_markdown
from modalign.evidence.validate import ValidateSettings, measure_checkpoint, validate

__all__ = [
    "MEASURES",
    "STATISTICS",
    "CaptionLoss",
    "Checkpoint",
    "Measure",
    "MeasureCache",
    "ValidateSettings",
    "bootstrap_intervals",
    "caption_loss",
    "correlations",
    "data_fingerprint",
    "gap_terms",
    "measure_checkpoint",
    "model_identity",
    "plot_scatter",
    "read_checkpoints",
    "read_measures",
    "render_markdown",
    "validate",
]
