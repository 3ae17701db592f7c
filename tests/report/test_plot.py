"""The per-layer plot: a valid PNG, log option, atomic write (no partial or temp files left)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from modalign.report import plot_layers
from modalign.report.plot import choose_log_scale


def test_plot_writes_valid_png(result_factory, tmp_path: Path) -> None:
    out = tmp_path / "nested" / "gap.png"
    returned = plot_layers([result_factory(), result_factory(0.5, model="b")], ["a", "b"], out)
    assert returned == out and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as img:
        img.verify()
    with Image.open(out) as img:
        assert img.size == (960, 600)
        assert len(img.convert("RGB").getcolors(100000) or []) > 10  # something was drawn
    assert sorted(p.name for p in out.parent.iterdir()) == ["gap.png"]  # no temp files left


def test_log_scale_and_svg(result_factory, tmp_path: Path) -> None:
    out = plot_layers([result_factory()], None, tmp_path / "g.svg", log_scale=True, title="t")
    assert out.read_text().lstrip().startswith("<?xml")
    bad = result_factory()
    bad["per_layer"][0] = 0.0  # a valid result (its MIR recomputed) that a log axis cannot show
    bad["mir"] = math.log10(sum(bad["per_layer"]))
    with pytest.raises(ValueError, match="log scale needs positive"):
        plot_layers([bad], None, tmp_path / "x.png", log_scale=True)


def test_automatic_log_scale() -> None:
    assert choose_log_scale([1e-3, 1.0, 2.0], None) is True  # spans more than 100x
    assert choose_log_scale([1.0, 50.0], None) is False
    assert choose_log_scale([0.0, 500.0], None) is False  # cannot log a zero: stay linear
    assert choose_log_scale([1e-3, 1.0], False) is False
    assert choose_log_scale([1.0, 2.0], True) is True
    with pytest.raises(ValueError, match="log scale needs positive"):
        choose_log_scale([0.0, 1.0], True)


def test_bad_suffix(result_factory, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"use a \.png, \.svg or \.pdf suffix"):
        plot_layers([result_factory()], None, tmp_path / "x.jpg")
    assert not (tmp_path / "x.jpg").exists()


def test_no_import_or_global_side_effects(result_factory, tmp_path: Path) -> None:
    """Importing touches no matplotlib; plotting neither loads pyplot nor switches the backend."""
    script = (
        "import json, sys\n"
        "import modalign.report as r\n"
        "assert 'matplotlib' not in sys.modules\n"
        "import matplotlib\n"
        "backend = matplotlib.rcParams._get_backend_or_none()\n"
        f"r.plot_layers([json.loads(sys.argv[1])], None, {str(tmp_path / 'z.png')!r})\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
        "assert matplotlib.rcParams._get_backend_or_none() == backend\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.run(
        [sys.executable, "-c", script, json.dumps(result_factory())],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "z.png").is_file()


def test_failed_plot_keeps_previous_file(result_factory, tmp_path: Path) -> None:
    out = tmp_path / "gap.png"
    out.write_bytes(b"previous")
    bad = result_factory()
    bad["per_layer"][0] = -1.0
    with pytest.raises(ValueError):
        plot_layers([bad], None, out, log_scale=True)
    assert out.read_bytes() == b"previous"
