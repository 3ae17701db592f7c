"""Rebuild the embedded default bit-for-bit: data -> tokenizer -> CLIP -> LM -> LLaVA pre-training.

Determinism: every stage is seeded, dropout is 0, `torch.use_deterministic_algorithms(True)`,
and the thread count is fixed (1 by default) because CPU reductions depend on it. The same
torch/transformers versions and CPU type give identical files; BUILD.json records sha256 sums.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from modalign.assets import default_dir
from modalign.atomic import atomic_write_json
from modalign.errors import ConfigError
from modalign.train import MonitorSettings, TrainConfig
from modalign_lab.pipeline.cycle import lab_recipe
from modalign_lab.pipeline.stages import pretrain
from modalign_lab.probes.mir import eval_pairs, fresh_connector_mir, mir_of
from modalign_lab.towers.llava import load_llava
from modalign_lab.towers.specs import ClipSpec, LMSpec
from modalign_lab.towers.train import make_data, train_clip, train_lm
from modalign_lab.world.dataset import DEFAULT_SIZES, load_split


@dataclass(frozen=True)
class DefaultRecipe:
    """Everything that determines the default's bytes."""

    seed: int = 0
    sizes: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_SIZES))
    image_size: int = 96
    corpus_scenes: int = 20000
    clip: ClipSpec = field(default_factory=ClipSpec)
    lm: LMSpec = field(default_factory=LMSpec)
    clip_train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            steps=800, batch_size=64, lr=5e-4, warmup_ratio=0.1, log_steps=50
        )
    )
    lm_train: TrainConfig = field(
        default_factory=lambda: TrainConfig(steps=1200, batch_size=32, lr=1e-3, log_steps=50)
    )
    pretrain_train: TrainConfig = field(
        default_factory=lambda: TrainConfig(steps=1600, batch_size=32, lr=1e-3, log_steps=25)
    )
    clip_hard_negatives: bool = True
    caption_level: int = 3
    eval_images: int = 100
    mir_every: int = 100  # MIR trace over pre-training on the shipped eval set
    fresh_seeds: int = 5  # fresh-connector MIR baseline over this many connector seeds
    threads: int = 1


def _sha256(path: Path) -> str:
    """Hex digest of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_default(work: Path, out: Path | None = None, recipe: DefaultRecipe | None = None) -> dict:
    """Train the default under `work` and install it in `out` (the package assets by default)."""
    recipe = recipe or DefaultRecipe()
    out = Path(out) if out is not None else default_dir()
    work = Path(work)
    prev_threads, prev_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(recipe.threads)
    torch.use_deterministic_algorithms(True)
    timings: dict[str, float] = {}
    try:
        t = time.perf_counter()
        data = make_data(
            work / "data",
            seed=recipe.seed,
            sizes=recipe.sizes,
            image_size=recipe.image_size,
            corpus_scenes=recipe.corpus_scenes,
        )
        timings["data_s"] = time.perf_counter() - t
        t = time.perf_counter()
        clip_metrics = train_clip(
            data,
            work / "clip",
            recipe.clip,
            recipe.clip_train,
            hard_negatives=recipe.clip_hard_negatives,
        )
        timings["clip_s"] = time.perf_counter() - t
        t = time.perf_counter()
        lm_metrics = train_lm(data, work / "lm", recipe.lm, recipe.lm_train)
        timings["lm_s"] = time.perf_counter() - t
        t = time.perf_counter()
        pt_recipe = lab_recipe(
            "pretrain",
            recipe.pretrain_train,
            monitor=MonitorSettings(every=recipe.mir_every, stop=False, n=recipe.eval_images),
        )
        pt_metrics = pretrain(
            data,
            work / "pretrain",
            pt_recipe,
            clip=work / "clip",
            lm=work / "lm",
            level=recipe.caption_level,
        )
        timings["pretrain_s"] = time.perf_counter() - t
        mir_metrics = _mir_evidence(work, data, recipe)
    finally:
        torch.set_num_threads(prev_threads)
        torch.use_deterministic_algorithms(prev_det)
    _install(work, data, out, recipe.eval_images)
    build = {
        "command": "modalign lab build-default",
        "recipe": json.loads(json.dumps(asdict(recipe), default=str)),
        "metrics": {
            "clip": clip_metrics,
            "lm": lm_metrics,
            "pretrain": pt_metrics,
            "mir": mir_metrics,
        },
        "timings": timings,
        "versions": {
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
        },
        "sha256": {
            str(p.relative_to(out)): _sha256(p)
            for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "BUILD.json"
        },
    }
    atomic_write_json(out / "BUILD.json", build)
    return build


def _mir_evidence(work: Path, data: Path, recipe: DefaultRecipe) -> dict:
    """MIR of the trained default vs the same model with fresh connectors, on the eval set."""
    model, processor = load_llava(work / "pretrain" / "model")
    pairs = eval_pairs(data, "test", recipe.eval_images, level=3)
    return {
        "trained": mir_of(model, processor, pairs)["mir"],
        "fresh_connector": fresh_connector_mir(model, processor, pairs, range(recipe.fresh_seeds)),
    }


def _install(work: Path, data: Path, out: Path, n_eval: int) -> None:
    """Copy the pre-trained model and the first n_eval test images + detailed captions to out."""
    for sub in ("model", "eval"):
        if (out / sub).exists():
            shutil.rmtree(out / sub)
    shutil.copytree(work / "pretrain" / "model", out / "model")
    (out / "eval" / "images").mkdir(parents=True)
    records = load_split(data, "test", n_eval)
    if len(records) < n_eval:
        raise ConfigError(f"test split has {len(records)} images, fewer than eval_images={n_eval}")
    for rec in records:
        shutil.copyfile(rec.image_path, out / "eval" / "images" / rec.image_path.name)
    passages = "\n".join(rec.captions[-1] for rec in records) + "\n"
    (out / "eval" / "passages.txt").write_text(passages, encoding="utf-8")
