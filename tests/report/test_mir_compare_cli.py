"""`modalign mir compare` through the CLI: table on stdout, plot file, exit 2 on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modalign.cli import main


def run_compare(argv: list[str]) -> int:
    return main(["mir", "compare", *argv])


def test_compare_prints_table_and_writes_plot(
    result_files: list[Path], tmp_path: Path, capsys
) -> None:
    out = tmp_path / "cmp.png"
    code = run_compare([*map(str, result_files), "--plot", str(out), "--labels", "A", "B", "--log"])
    stdout = capsys.readouterr().out
    assert code == 0
    assert stdout.splitlines()[2].split()[0] == "A" and stdout.splitlines()[3].split()[0] == "B"
    assert f"plot written to {out}" in stdout
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_default_labels_are_file_stems(result_files: list[Path], capsys) -> None:
    assert run_compare([str(p) for p in result_files]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [lines[2].split()[0], lines[3].split()[0]] == ["base", "moca"]


def test_missing_invalid_and_mislabelled(result_files: list[Path], tmp_path: Path, capsys) -> None:
    assert run_compare([str(tmp_path / "nope.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"mir": 1.0}))
    assert run_compare([str(result_files[0]), str(bad)]) == 2
    assert "missing keys: per_layer, layers" in capsys.readouterr().err
    assert run_compare([*map(str, result_files), "--labels", "one"]) == 2
    assert "got 1 labels for 2 results" in capsys.readouterr().err


def test_usage_errors_return_2_and_help_0(capsys) -> None:
    assert run_compare([]) == 2
    assert "required" in capsys.readouterr().err
    assert run_compare(["--help"]) == 0
    assert "RESULT.json" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv", [["x.json", "--plot"], ["--bogus", "x.json"], ["x.json", "--log", "--linear"]]
)
def test_bad_options(argv: list[str], capsys) -> None:
    assert run_compare(argv) == 2
