"""The miniature world's LLaVA stages on the one training path (`modalign.train`).

    pretrain(data, out, recipe, clip=..., lm=...)     # stage 1 from separately trained towers
    pretrain(data, out, recipe, base=llava_dir)       # stage 1 on a saved LLaVA, fresh connector
    sft(data, pretrain_out, out, recipe)              # stage 2
    evaluate(model_dir, data)                         # caption loss + VQA accuracy per type

Each writes OUT/model, OUT/stage.json, OUT/train_log.json and OUT/metrics.json, and resumes
from OUT/checkpoints when re-run after an interruption (a finished stage is not redone).
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import CLIPModel, LlamaForCausalLM

from modalign.atomic import atomic_write_json
from modalign.errors import ConfigError
from modalign.train import Recipe, prepare, train_stage
from modalign_lab.probes.evaluate import caption_loss, text_loss, vqa_accuracy
from modalign_lab.probes.mir import eval_pairs
from modalign_lab.probes.recall import RecallTrace, keeps_grid
from modalign_lab.towers.llava import (
    build_processor,
    llava_from_towers,
    load_llava,
    reset_connector,
)
from modalign_lab.towers.train import load_tokenizer
from modalign_lab.world.conversations import caption_conversations, vqa_conversations
from modalign_lab.world.dataset import load_split
from modalign_lab.world.samples import MIXED


def model_dir(path: Path) -> Path:
    """A stage directory's model/ subfolder, or the path itself if it is a model directory."""
    path = Path(path)
    return path / "model" if (path / "model").is_dir() else path


def _stage1_model(data_dir: Path, clip: Path | None, lm: Path | None, base: Path | None, seed: int):
    """LLaVA with a fresh seeded connector, from towers or from a saved LLaVA."""
    if base is not None:
        if clip or lm:
            raise ConfigError("give either a base LLaVA or CLIP + LM towers, not both")
        model, processor = load_llava(model_dir(base))
        reset_connector(model, seed)
        return model, processor
    if not (clip and lm):
        raise ConfigError("pre-training needs CLIP and LM towers (or a base LLaVA)")
    tok = load_tokenizer(data_dir)
    clip_model = CLIPModel.from_pretrained(model_dir(clip))
    model = llava_from_towers(
        clip_model, LlamaForCausalLM.from_pretrained(model_dir(lm)), tok, seed
    )
    vision = clip_model.config.vision_config
    return model, build_processor(tok, vision.image_size, vision.patch_size)


def _history(path: Path) -> list[dict]:
    """A periodic probe's history (MIR monitor, recall trace), if the stage ran it."""
    if not path.is_file():
        return []
    return json.loads(path.read_text(encoding="utf-8"))["history"]


def pretrain(
    data_dir: Path,
    out: Path,
    recipe: Recipe,
    *,
    clip: Path | None = None,
    lm: Path | None = None,
    base: Path | None = None,
    level: int = 3,
    limit: int | None = None,
    images: int | None = None,
) -> dict:
    """LLaVA stage 1 on (image, caption at `level`) pairs; the recipe says what trains. The
    caption loss of the test split is measured before (fresh connector) and after.

    `images`: pre-train on the first N training images only (nested data-scale prefixes);
    `limit`: cap every split (quick checks)."""
    if recipe.stage.name != "pretrain":
        raise ConfigError(f"pretrain needs a pre-training recipe, got stage {recipe.stage.name!r}")
    model, processor = _stage1_model(data_dir, clip, lm, base, recipe.train.seed)
    model, processor = prepare(model, processor, recipe)
    test = load_split(data_dir, "test", limit)
    eval_level = 3 if level == MIXED else level
    fresh_loss = caption_loss(model, processor, test, eval_level)
    probe = eval_pairs(data_dir, "test", recipe.monitor.n) if recipe.monitor else None
    train = load_split(data_dir, "train", limit)
    if images is not None:
        if not 0 < images <= len(train):
            raise ConfigError(f"pre-training on {images} images, the train split has {len(train)}")
        train = train[:images]
    convs = caption_conversations(train, level)
    traces = []
    if recipe.monitor is not None and keeps_grid(model):  # recalled words beside MIR
        traces.append(RecallTrace(processor, test[: recipe.monitor.n], recipe.monitor.every,
                                  Path(out) / "recall_trace"))  # fmt: skip
    summary = train_stage(model, processor, convs, recipe, out, probe=probe, callbacks=traces)
    model, processor = load_llava(Path(out) / "model")
    metrics = {
        "caption_level": level,
        "trainable_params": summary["unlock"]["trainable"],
        "test_caption_loss": caption_loss(model, processor, test, eval_level),
        "test_caption_loss_fresh_connector": fresh_loss,
        "train_loss": summary["train_loss"],
        "stopped_early_at": summary["stopped_early_at"],
        "mir_trace": [
            {"step": h["step"], "mir": h["mir"], "per_layer": h["per_layer"]}
            for h in _history(Path(out) / "mir_monitor" / "mir_curve.json")
        ],
        "recall_trace": _history(Path(out) / "recall_trace" / "recall_curve.json"),
    }
    atomic_write_json(Path(out) / "metrics.json", metrics)
    return metrics


def sft(
    data_dir: Path,
    model_from: Path,
    out: Path,
    recipe: Recipe,
    limit: int | None = None,
    *,
    multi_turn: bool = True,
) -> dict:
    """LLaVA stage 2 on the VQA data in the chat template; the recipe says what trains.

    multi_turn (default): one LLaVA-style conversation per image holding all of its questions in
    a seeded order (above chance on every question type in both runs we made); otherwise one
    single-turn sample per question.
    """
    if recipe.stage.name != "sft":
        raise ConfigError(f"sft needs an SFT recipe, got stage {recipe.stage.name!r}")
    model, processor = load_llava(model_dir(model_from))
    model, processor = prepare(model, processor, recipe)
    records = load_split(data_dir, "train", limit)
    convs = vqa_conversations(records, multi_turn=multi_turn, seed=recipe.train.seed)
    summary = train_stage(model, processor, convs, recipe, out)
    metrics = {
        "trainable_params": summary["unlock"]["trainable"],
        "multi_turn": multi_turn,
        "train_loss": summary["train_loss"],
    }
    atomic_write_json(Path(out) / "metrics.json", metrics)
    return metrics


def evaluate(
    model_path: Path,
    data_dir: Path,
    split: str = "test",
    *,
    level: int = 3,
    limit: int | None = None,
) -> dict:
    """Caption loss, text-only loss (no image) and per-type VQA accuracy of a saved LLaVA on a
    held-out split."""
    model, processor = load_llava(model_dir(model_path))
    records = load_split(data_dir, split, limit)
    return {
        "split": split,
        "caption_level": level,
        "caption_loss": caption_loss(model, processor, records, level),
        "text_loss": text_loss(model, processor, [c for r in records for c in r.captions]),
        "vqa": vqa_accuracy(model, processor, records),
    }
