"""The cross-study index: rows read from study reports, the Markdown table, the plot, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from modalign_lab.studies.index import (
    INDEX_MEASURES,
    POOLED,
    index_rows,
    load_summaries,
    render_index,
    write_index,
)

from modalign.cli import main
from modalign.errors import DataError


def _corr(rho: float, ci: tuple[float, float], n: int = 8) -> dict:
    return {"n": n, "spearman": rho, "kendall": rho / 2, "pearson": rho,
            "ci": {"spearman": list(ci), "kendall": list(ci), "pearson": list(ci)}}  # fmt: skip


def _summary(name: str, rhos: dict[str, float], spread: float, seed_max: float) -> dict:
    pooled = {m: _corr(r, (r - 0.1, min(1.0, r + 0.1))) for m, r in rhos.items()}
    return {
        "study": name, "description": "d", "reference": f"paper {name}", "sft_recipes": {},
        "paper_mir_spearman": -0.97 if name == "beta" else None,
        "traces": {},
        "sft": {"sft": {
            "variants": {"a": {}, "b": {}, "c": {}},
            "spread": {"vqa_all_across_variants": spread, "vqa_all_seed_range_max": seed_max,
                       "vqa_all_seed_range_mean": seed_max / 2},
            "spearman_over_variant_means": {m: r / 2 for m, r in rhos.items()},
            "validate": {"correlations": {"seed0": {}, POOLED: pooled}},
        }},
    }  # fmt: skip


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    rhos_b = {"mir": -0.9, "caption_loss": -0.5, "mmd": -0.3, "centroid_gap": 0.2,
              "cosine_gap": 0.4}  # fmt: skip
    rhos_a = {"mir": 0.3, "caption_loss": -0.2, "mmd": 0.1, "cosine_gap": -0.7}
    (tmp_path / "zeta.json").write_text(json.dumps(_summary("beta", rhos_b, 0.12, 0.03)))
    (tmp_path / "alpha.json").write_text(json.dumps(_summary("alpha", rhos_a, 0.01, 0.02)))
    (tmp_path / "mir_trace.json").write_text(json.dumps({"every": 50, "rows": []}))
    return tmp_path


def test_rows_from_reports(reports: Path) -> None:
    summaries = load_summaries(reports)
    assert [s["study"] for s in summaries] == ["alpha", "beta"]  # the trace table is skipped
    rows = index_rows(summaries)
    alpha, beta = rows
    assert beta["best"] == "mir" and alpha["best"] == "cosine_gap"
    assert beta["measures"]["mir"] == {"spearman": -0.9, "ci": [-1.0, -0.8], "over_means": -0.45}
    assert alpha["measures"]["centroid_gap"] == {"spearman": None, "ci": None, "over_means": None}
    assert beta["ratio"] == pytest.approx(4.0) and alpha["ratio"] == pytest.approx(0.5)
    assert beta["paper_mir_spearman"] == -0.97 and alpha["paper_mir_spearman"] is None
    assert beta["checkpoints"] == 8 and beta["variants"] == 3
    assert set(beta["measures"]) == set(INDEX_MEASURES)


def test_markdown_and_files(reports: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["lab", "study-index", "--dir", str(reports), "--out", str(out)]) == 0
    text = (out / "index.md").read_text()
    assert text == render_index(index_rows(load_summaries(reports)))
    line = next(s for s in text.splitlines() if s.startswith("| beta | sft |"))
    assert "| 0.120 | 0.030 | 4.0 | -0.90 [-1.00, -0.80] |" in line and line.endswith(
        "| MIR | -0.97 |"
    )
    assert "| alpha | sft | +0.15 | -0.10 | +0.05 | - | -0.35 |" in text
    # a measure no study has over variant means gets no column there
    only = render_index(index_rows([_summary("gamma", {"mir": -0.5}, 0.1, 0.01)]))
    assert "| gamma | sft | -0.25 |" in only and "| study | SFT | MIR |" in only
    assert "- `beta`: paper beta" in text
    assert (out / "index.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "index.json").read_text())["rows"][1]["study"] == "beta"
    # written into the reports' own folder, a second run ignores its own index.json
    assert write_index(reports) == write_index(reports) == index_rows(load_summaries(reports))


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no study report"):
        write_index(tmp_path)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(DataError, match="not a readable JSON"):
        load_summaries(tmp_path)
    assert main(["lab", "study-index", "--dir", str(tmp_path)]) == 2
