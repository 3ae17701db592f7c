"""The committed study reports: they live in `REPORT_DIR`, the lab's report-folder defaults point
there, and the cross-study index regenerates from them exactly."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

from modalign_lab.studies import REPORT_DIR
from modalign_lab.studies.catalog import STUDIES
from modalign_lab.studies.index import index_rows, load_summaries, render_index, write_index
from modalign_lab.studies.study import run_study, write_report
from modalign_lab.studies.trace import write_trace_report

ROOT = Path(__file__).resolve().parents[2]
REPORTS = ROOT / REPORT_DIR


def test_report_dir_holds_the_committed_reports() -> None:
    summaries = load_summaries(REPORTS)
    names = {s["study"] for s in summaries}
    assert names, f"no study report in {REPORTS}"
    assert names <= set(STUDIES.names())
    for name in names:
        assert (REPORTS / f"{name}.md").is_file()
    archived = {p.name for p in (REPORTS / "points").iterdir() if p.is_dir()}
    assert archived and archived <= names  # every archived study has its report beside it
    assert (REPORTS / "mir_trace.json").is_file()


def test_report_folder_defaults_are_report_dir() -> None:
    for fn, param in ((run_study, "report_dir"), (write_report, "report_dir"),
                      (write_trace_report, "report_dir"), (write_index, "folder")):  # fmt: skip
        assert inspect.signature(fn).parameters[param].default == REPORT_DIR, fn.__name__


def test_committed_index_regenerates_from_the_reports() -> None:
    rows = index_rows(load_summaries(REPORTS))
    assert (REPORTS / "index.md").read_text(encoding="utf-8") == render_index(rows)
    assert json.loads((REPORTS / "index.json").read_text(encoding="utf-8")) == {"rows": rows}


def test_the_lab_cli_defaults_are_report_dir() -> None:
    from modalign.cli import build_parser

    parser = build_parser("lab")
    study = parser.parse_args(["lab", "study", "detail", "--out", "x"])
    index = parser.parse_args(["lab", "study-index"])
    trace = parser.parse_args(["lab", "trace", "--out", "x"])
    assert study.report_dir == index.dir == trace.report_dir == REPORT_DIR
