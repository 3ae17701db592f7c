"""The miniature world's data and towers: dataset + tokenizer, tiny CLIP, tiny LM.

Each stage writes OUT/model (save_pretrained, safetensors), OUT/train_log.json and
OUT/metrics.json, and resumes from OUT/checkpoints when re-run after an interruption.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, CLIPModel, LlamaForCausalLM

from modalign.atomic import atomic_write_json
from modalign.errors import ConfigError, DataError
from modalign.train import TrainConfig, fit
from modalign_lab.towers.clip_loss import negclip_loss
from modalign_lab.towers.clip_model import build_clip
from modalign_lab.towers.collators import ClipCollator, LMCollator
from modalign_lab.towers.llava import build_image_processor
from modalign_lab.towers.lm_model import build_lm
from modalign_lab.towers.specs import ClipSpec, LMSpec
from modalign_lab.towers.tokenizer import train_tokenizer
from modalign_lab.world.conversations import export_llava
from modalign_lab.world.dataset import load_corpus, load_split, read_manifest, write_dataset
from modalign_lab.world.samples import MIXED, CaptionDataset, PackedTextDataset


def world_key(
    seed: int, sizes: dict[str, int], image_size: int, glyph_scale: int | None
) -> dict[str, Any]:
    """What makes two generated worlds the same (checked against a world's manifest)."""
    return {
        "seed": seed,
        "image_size": image_size,
        "sizes": dict(sizes),
        "glyph_scale": glyph_scale,
    }


def holds_world(folder: Path, key: dict[str, Any]) -> bool:
    """Whether `folder` holds a finished world (manifest + tokenizer) with this `world_key`."""
    manifest = Path(folder) / "manifest.json"
    if not manifest.is_file() or not (Path(folder) / "tokenizer").is_dir():
        return False
    try:
        made = json.loads(manifest.read_text(encoding="utf-8"))
    except ValueError:
        return False
    return {k: made.get(k) for k in key} == key


def make_data(
    out: Path,
    *,
    seed: int,
    sizes: dict[str, int],
    image_size: int,
    corpus_scenes: int,
    tokenizer_from: Path | None = None,
    glyph_scale: int | None = None,
) -> Path:
    """Generate the world's splits and corpus (+ llava/*.json), and train the tokenizer on
    corpus + captions. `tokenizer_from` copies an existing tokenizer instead (to train on top
    of existing towers)."""
    out = Path(out)
    if holds_world(out, world_key(seed, sizes, image_size, glyph_scale)):  # made before
        return out
    manifest = out / "manifest.json"
    if manifest.is_file() and (out / "tokenizer").is_dir():
        made = json.loads(manifest.read_text(encoding="utf-8"))
        raise ConfigError(f"{out} holds another dataset ({made}); use a new folder")
    write_dataset(out, seed=seed, sizes=sizes, image_size=image_size, corpus_scenes=corpus_scenes,
                  glyph_scale=glyph_scale)  # fmt: skip
    if sizes.get("train", 0) > 0:
        export_llava(out)  # the same data as LLaVA JSON, for `modalign train`
    if tokenizer_from is not None:
        AutoTokenizer.from_pretrained(tokenizer_from).save_pretrained(out / "tokenizer")
        return out
    texts = load_corpus(out)
    if "train" in sizes and sizes["train"] > 0:
        texts += [c for r in load_split(out, "train") for c in r.captions]
        texts += [f"{q.question} {q.answer}" for r in load_split(out, "train") for q in r.vqa]
    train_tokenizer(texts).save_pretrained(out / "tokenizer")
    return out


def load_tokenizer(data_dir: Path):
    """The dataset's tokenizer (written by make_data)."""
    path = Path(data_dir) / "tokenizer"
    if not path.is_dir():
        raise DataError(f"{path} missing: run `modalign lab data --out {data_dir}` first")
    return AutoTokenizer.from_pretrained(path)


@torch.no_grad()
def clip_retrieval_accuracy(
    clip: CLIPModel, collate: ClipCollator, data: CaptionDataset, group: int = 50
) -> float:
    """Image->caption top-1 accuracy within groups of `group` held-out pairs."""
    clip.eval()
    hits, n = 0, 0
    for start in range(0, len(data) - group + 1, group):
        batch = collate([data[i] for i in range(start, start + group)])
        batch.pop("return_loss")
        logits = clip(**batch).logits_per_image  # (G, G)
        hits += int((logits.argmax(-1) == torch.arange(group)).sum())
        n += group
    return hits / max(n, 1)


@torch.no_grad()
def clip_hard_negative_accuracy(
    clip: CLIPModel, collate: ClipCollator, data: CaptionDataset, batch_size: int = 64
) -> float:
    """Fraction of held-out images scoring their caption above its minimally edited twin."""
    clip.eval()
    hits = 0
    for start in range(0, len(data), batch_size):
        batch = collate([data[i] for i in range(start, min(start + batch_size, len(data)))])
        b = len(batch.pop("labels"))
        logits = clip(**batch).logits_per_image  # (B, 2B): positives then negatives
        idx = torch.arange(b)
        hits += int((logits[idx, idx] > logits[idx, b + idx]).sum())
    return hits / len(data)


def train_clip(
    data_dir: Path,
    out: Path,
    spec: ClipSpec,
    config: TrainConfig,
    limit: int | None = None,
    *,
    hard_negatives: bool = True,
    locked_vision: Any = None,
) -> dict:
    """Contrastive CLIP training on (image, caption of every level) pairs of the train split.

    hard_negatives adds one minimally edited caption per image (NegCLIP), so captions that
    differ in a single shape, colour, place or glyph must be told apart;
    `val_hard_negative_accuracy` measures exactly that on held-out images.
    `locked_vision`: a CLIPVisionModel (e.g. a LLaVA's vision tower) copied in and frozen, so
    only the text tower and the projections train (LiT): a text tower for that exact image
    tower, which SEA's labels need. `spec` must match the tower.
    """
    manifest = read_manifest(data_dir)
    if manifest["image_size"] != spec.image_size:
        raise DataError(
            f"data has {manifest['image_size']} px images but ClipSpec.image_size={spec.image_size}"
        )
    tok = load_tokenizer(data_dir)
    clip = build_clip(tok, spec, config.seed)
    if locked_vision is not None:
        inner = getattr(locked_vision, "vision_model", locked_vision)  # transformers 4.x nests it
        clip.vision_model.load_state_dict(inner.state_dict())
        clip.vision_model.requires_grad_(False)
    collate = ClipCollator(tok, build_image_processor(spec.image_size), spec.max_text_tokens)
    neg_seed = config.seed if hard_negatives else None
    train_data = CaptionDataset(load_split(data_dir, "train", limit), MIXED, neg_seed)
    # the model's log-scale lets the loss gather every process's negatives when distributed
    loss = partial(negclip_loss, logit_scale=clip.logit_scale) if hard_negatives else None
    log, _ = fit(clip, train_data, collate, config, out, trainer_kwargs={"compute_loss_func": loss})
    val_records = load_split(data_dir, "val", limit)
    metrics = {
        "hard_negatives": hard_negatives,
        "val_retrieval_top1_of_50": clip_retrieval_accuracy(
            clip, collate, CaptionDataset(val_records, 3)
        ),
        "val_hard_negative_accuracy": clip_hard_negative_accuracy(
            clip, collate, CaptionDataset(val_records, 3, negatives_seed=10_000 + config.seed)
        ),
        "train_loss": log["train_loss"],
    }
    metrics["locked_vision"] = locked_vision is not None
    clip.save_pretrained(out / "model")
    tok.save_pretrained(out / "model")
    build_image_processor(spec.image_size).save_pretrained(out / "model")
    atomic_write_json(Path(out) / "metrics.json", metrics)
    return metrics


@torch.no_grad()
def lm_loss(
    lm: LlamaForCausalLM, collate: LMCollator, lines: list[str], batch_size: int = 64
) -> float:
    """Mean per-token NLL of held-out lines."""
    lm.eval()
    total, count = 0.0, 0
    for start in range(0, len(lines), batch_size):
        batch = collate(lines[start : start + batch_size])
        n = int((batch["labels"][:, 1:] != -100).sum())
        total += lm(**batch).loss.item() * n
        count += n
    return total / count


def train_lm(
    data_dir: Path,
    out: Path,
    spec: LMSpec,
    config: TrainConfig,
    limit: int | None = None,
    block_size: int = 128,
) -> dict:
    """Causal-LM pre-training on the packed text corpus; held-out loss on val captions (all levels)."""
    tok = load_tokenizer(data_dir)
    lm = build_lm(tok, spec, config.seed)
    lines = load_corpus(data_dir)[:limit]
    collate = LMCollator(tok, spec.max_positions)
    log, _ = fit(lm, PackedTextDataset(lines, tok, block_size), collate, config, out)
    val_lines = [c for r in load_split(data_dir, "val", limit) for c in r.captions]
    metrics = {
        "val_caption_text_loss": lm_loss(lm, collate, val_lines),
        "train_loss": log["train_loss"],
    }
    lm.save_pretrained(out / "model")
    tok.save_pretrained(out / "model")
    atomic_write_json(Path(out) / "metrics.json", metrics)
    return metrics
