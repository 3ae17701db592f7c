"""Named studies (grids of cycles over seeds), their archive, curves, reports and cross-study
index."""

from pathlib import Path

__all__ = ["REPORT_DIR"]

# Where the committed study reports live (relative to the repository root): every study's
# NAME.{json,md,png}, the index, the MIR trace and the archived points (REPORT_DIR/points).
# The lab's report-folder defaults (`lab study --report-dir` and, through it, `--archive`,
# `lab study-index --dir`, `lab trace --report-dir`) are this folder.
REPORT_DIR = Path("docs/studies/reports")
