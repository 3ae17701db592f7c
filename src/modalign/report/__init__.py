"""Reports for MIR results: one-screen summary, comparison table, per-layer plot, labels."""

from modalign.report.compare import compare_table
from modalign.report.curves import plot_curve, plot_curves
from modalign.report.figure import new_figure, save_figure
from modalign.report.labels import check_labels, default_labels
from modalign.report.plot import plot_layers
from modalign.report.summary import summary_table

__all__ = [
    "check_labels",
    "compare_table",
    "default_labels",
    "new_figure",
    "plot_curve",
    "plot_curves",
    "plot_layers",
    "save_figure",
    "summary_table",
]
