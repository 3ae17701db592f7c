"""The whole cycle wiring (tiny): data -> CLIP/LM -> pre-train -> MIR via the runner -> SFT -> eval."""

from __future__ import annotations

import json
import math

from modalign.lab.cycle import CycleConfig, run_cycle
from modalign.lab.trainer import TrainConfig


def test_tiny_cycle_from_scratch(tmp_path, tiny_specs):
    sizes, clip, lm = tiny_specs
    step = TrainConfig(steps=2, batch_size=4, lr=1e-3, log_steps=1, progress=False)
    cfg = CycleConfig(
        sizes=sizes,
        corpus_scenes=30,
        pretrain=step,
        sft=step,
        clip=step,
        lm=step,
        mir_samples=6,
        from_scratch=True,
        clip_spec=clip,
        lm_spec=lm,
    )
    report = run_cycle(tmp_path, cfg)
    assert json.loads((tmp_path / "cycle.json").read_text()) == report
    for key in ("mir_pretrained", "mir_fresh_connector"):
        assert math.isfinite(report[key]["mir"]) and report[key]["n"] == 6
    assert report["mir_pretrained"]["mir"] != report["mir_fresh_connector"]["mir"]
    assert set(report["wall_s"]) >= {
        "data",
        "train_clip",
        "train_lm",
        "pretrain",
        "mir",
        "sft",
        "eval",
        "total",
    }
    assert "all" in report["eval"]["vqa"]
