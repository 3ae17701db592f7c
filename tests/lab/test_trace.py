"""The pre-training trace: every measured step carries its gap terms; report files; resume."""

from __future__ import annotations

import json
from dataclasses import replace

from modalign_lab.pipeline.cycle import CycleConfig
from modalign_lab.studies.trace import trace_pretraining, write_trace_report


def test_trace_records_terms_reports_and_resumes(tiny_data, tiny_llava, tmp_path):
    base = CycleConfig().pretrain
    recipe = replace(base, train=replace(base.train, steps=2, batch_size=4, save_steps=0,
                                         log_steps=1, progress=False))  # fmt: skip
    out = tmp_path / "trace"
    trace = trace_pretraining(out, tiny_data, every=1, n=4, recipe=recipe, base=tiny_llava)
    assert [h["step"] for h in trace["history"]] == [0, 1, 2]
    for h in trace["history"]:
        terms = h["terms"]
        assert abs(terms["mir"] - h["mir"]) < 1e-12
        assert {"norm_ratio", "mean_term", "cov_term", "fd_own_scaling"} <= set(terms["layers"][0])
    summary = write_trace_report(trace, tmp_path / "docs")
    assert [r["step"] for r in summary["rows"]] == [0, 1, 2]
    assert summary["rows"][1]["train_loss"] is not None
    assert (tmp_path / "docs" / "mir_trace.png").read_bytes()[:4] == b"\x89PNG"
    assert "| 2 |" in (tmp_path / "docs" / "mir_trace.md").read_text()
    assert json.loads((tmp_path / "docs" / "mir_trace.json").read_text()) == summary
    again = trace_pretraining(out, tiny_data, every=1, n=4, recipe=recipe, base=tiny_llava)
    assert again["history"] == trace["history"]  # finished: nothing trained or measured again
