"""The Python API: every example of docs/api.md runs as written, and `modalign.mir` gives the
command line's number."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


def test_the_docs_examples_run_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    for block in _blocks():  # one namespace, in page order, as a reader runs them
        exec(compile(block, str(DOC), "exec"), scope)
    out = capsys.readouterr().out
    assert "MIR 0.9824" in out  # the same number as `modalign mir`
    assert "100 exact drop" in out and "True" in out
    assert "outliers" in out  # the error example printed its one line


def test_importing_modalign_loads_nothing_heavy():
    code = ("import sys, modalign\n"
            "print([m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules])")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_unknown_settings_are_config_errors():
    import modalign

    with pytest.raises(modalign.ConfigError, match="unknown setting\\(s\\) lr"):
        modalign.mir("x", images="a", texts="b", lr=1e-3)
    with pytest.raises(modalign.DataError, match="does not exist"):  # before any model load
        modalign.mir("x", images="no/such/folder", texts="no.txt")
    with pytest.raises(modalign.ConfigError, match="unknown setting\\(s\\) mir_n_samples"):
        modalign.train_model("x", "d.json", "out", mir_n_samples=3)
    with pytest.raises(modalign.DataError, match="of one length"):
        modalign.mir("x", images=["a.png"], texts=["one", "two"])
