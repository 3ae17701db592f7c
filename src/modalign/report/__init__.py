"""Reports for MIR results: one-screen summary, comparison table, per-layer plot, atomic writes."""

from modalign.report.atomic import atomic_write, atomic_write_text
from modalign.report.compare import compare_table
from modalign.report.plot import plot_layers
from modalign.report.runs import RunView, as_run
from modalign.report.summary import summary_table

__all__ = [
    "RunView",
    "as_run",
    "atomic_write",
    "atomic_write_text",
    "compare_table",
    "plot_layers",
    "summary_table",
]
