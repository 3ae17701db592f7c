"""The whole cycle wiring (tiny): data -> CLIP/LM -> pre-train -> MIR via the runner -> SFT -> eval."""

from __future__ import annotations

import json
import math

from modalign_lab.pipeline.cycle import CycleConfig, lab_recipe, run_cycle

from modalign.train.fit import TrainConfig
from modalign.train.recipe import MonitorSettings


def test_tiny_cycle_from_scratch(tmp_path, tiny_specs):
    sizes, clip, lm = tiny_specs
    step = TrainConfig(steps=2, batch_size=4, lr=1e-3, log_steps=1, progress=False)
    cfg = CycleConfig(
        sizes=sizes,
        corpus_scenes=30,
        pretrain=lab_recipe("pretrain", step, monitor=MonitorSettings(every=1, stop=False, n=6)),
        sft=lab_recipe("sft", step),
        clip=step,
        lm=step,
        mir_samples=6,
        fresh_seeds=2,
        from_scratch=True,
        clip_spec=clip,
        lm_spec=lm,
    )
    report = run_cycle(tmp_path, cfg)
    assert json.loads((tmp_path / "cycle.json").read_text()) == report
    trained, fresh = report["mir_pretrained"], report["mir_fresh_connector"]
    assert math.isfinite(trained["mir"]) and trained["n"] == 6
    seeds = fresh["per_seed"]
    assert [r["seed"] for r in seeds] == [0, 1] and all(r["n"] == 6 for r in seeds)
    values = [r["mir"] for r in seeds]
    assert fresh["mir_min"] == min(values) and fresh["mir_max"] == max(values)
    assert math.isclose(fresh["mir_mean"], sum(values) / 2)
    assert values[0] != values[1] and trained["mir"] not in values
    # The trace starts at the fresh connector of the pretrain seed (0) and ends at the trained one.
    trace = report["pretrain"]["mir_trace"]
    assert [t["step"] for t in trace] == [0, 1, 2]
    assert math.isclose(trace[0]["mir"], values[0], rel_tol=1e-9)
    assert math.isclose(trace[-1]["mir"], trained["mir"], rel_tol=1e-6)
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
