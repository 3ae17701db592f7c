"""The whole lab cycle: data -> pre-train (connector) -> MIR -> SFT -> held-out accuracy.

By default the towers (vision encoder, LM, tokenizer) come from the embedded default model,
as a real project starts from a released CLIP and LLM; `from_scratch` trains them too.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from modalign.lab.io import load_llava
from modalign.lab.llava import reset_connector
from modalign.lab.mir import eval_pairs, mir_of
from modalign.lab.specs import ClipSpec, LMSpec
from modalign.lab.stages import (
    evaluate,
    make_data,
    pretrain,
    pretrain_from_llava,
    sft,
    train_clip,
    train_lm,
)
from modalign.lab.trainer import TrainConfig


@dataclass(frozen=True)
class CycleConfig:
    """Sizes and schedules of one cycle (defaults: about 10-15 minutes on 2 CPU cores)."""

    seed: int = 0
    sizes: dict[str, int] = field(default_factory=lambda: {"train": 3000, "val": 100, "test": 300})
    image_size: int = 64
    corpus_scenes: int = 20000
    caption_level: int = 3
    pretrain: TrainConfig = field(
        default_factory=lambda: TrainConfig(steps=300, batch_size=32, lr=2e-3)
    )
    sft: TrainConfig = field(
        default_factory=lambda: TrainConfig(steps=2000, batch_size=32, lr=1e-3)
    )
    unlock_vision: bool = False  # SFT also trains the vision tower
    clip: TrainConfig = field(
        default_factory=lambda: TrainConfig(steps=800, batch_size=64, lr=5e-4, warmup_ratio=0.1)
    )
    lm: TrainConfig = field(default_factory=lambda: TrainConfig(steps=600, batch_size=32, lr=1e-3))
    mir_samples: int = 100
    from_scratch: bool = False
    clip_spec: ClipSpec = field(default_factory=ClipSpec)  # from_scratch only
    lm_spec: LMSpec = field(default_factory=LMSpec)  # from_scratch only


def run_cycle(out: Path, config: CycleConfig | None = None, base: Path | None = None) -> dict:
    """Run every stage under `out`; writes and returns out/cycle.json (metrics + wall times)."""
    cfg = config or CycleConfig()
    out = Path(out)
    times: dict[str, float] = {}

    def timed(name, fn, *args, **kwargs):
        t = time.perf_counter()
        value = fn(*args, **kwargs)
        times[name] = round(time.perf_counter() - t, 2)
        print(f"[cycle] {name}: {times[name]:.1f} s", flush=True)
        return value

    if not cfg.from_scratch and base is None:
        from modalign.lab.default import default_model_path

        base = default_model_path()
    data = timed(
        "data",
        make_data,
        out / "data",
        seed=cfg.seed,
        sizes=cfg.sizes,
        image_size=cfg.image_size,
        corpus_scenes=cfg.corpus_scenes,
        tokenizer_from=None if cfg.from_scratch else base,
    )
    report: dict = {"config": json.loads(json.dumps(asdict(cfg), default=str)), "base": str(base)}
    if cfg.from_scratch:
        report["clip"] = timed(
            "train_clip",
            train_clip,
            data,
            out / "clip",
            replace(cfg.clip_spec, image_size=cfg.image_size),
            cfg.clip,
        )
        report["lm"] = timed("train_lm", train_lm, data, out / "lm", cfg.lm_spec, cfg.lm)
        report["pretrain"] = timed(
            "pretrain",
            pretrain,
            data,
            out / "clip",
            out / "lm",
            out / "pretrain",
            cfg.pretrain,
            level=cfg.caption_level,
        )
    else:
        report["pretrain"] = timed(
            "pretrain",
            pretrain_from_llava,
            data,
            base,
            out / "pretrain",
            cfg.pretrain,
            level=cfg.caption_level,
        )
    pairs = eval_pairs(data, "test", cfg.mir_samples, level=3)
    model, processor = load_llava(out / "pretrain" / "model")
    report["mir_pretrained"] = timed("mir", mir_of, model, processor, pairs)
    reset_connector(model, cfg.pretrain.seed)  # the same model before stage 1
    report["mir_fresh_connector"] = mir_of(model, processor, pairs)
    report["sft"] = timed(
        "sft", sft, data, out / "pretrain", out / "sft", cfg.sft, unlock_vision=cfg.unlock_vision
    )
    report["eval"] = timed("eval", evaluate, out / "sft", data, "test", level=cfg.caption_level)
    report["wall_s"] = times
    report["wall_s"]["total"] = round(sum(times.values()), 2)
    report["threads"] = torch.get_num_threads()
    (out / "cycle.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report
