"""SEA in the miniature world: a text tower for the LLaVA's own vision tower (LiT), the world's
word list, labels for a dataset (from patch tokens as SEA, or from region crops), and how often a patch's top label names its cell's content
(to choose the similarity sign, which SEA leaves to CLIP Surgery's observation on real CLIPs);
and oracle labels (each cell's true words), the control of what SEA can do with perfect labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import CLIPModel

from modalign.atomic import atomic_write_json
from modalign.methods.sea import LabelCache, build_label_cache, save_label_cache
from modalign.train import TrainConfig
from modalign_lab.probes.recall import cell_truth
from modalign_lab.towers.llava import build_image_processor, load_llava
from modalign_lab.towers.specs import ClipSpec
from modalign_lab.towers.train import load_tokenizer, train_clip
from modalign_lab.world.dataset import Record, load_split
from modalign_lab.world.vocab import label_words

LIT = TrainConfig(steps=800, batch_size=64, lr=5e-4, warmup_ratio=0.1, progress=False)


def lit_clip(data: Path, base: Path, out: Path, config: TrainConfig = LIT) -> Path:
    """Train (once) a CLIP text tower for `base`'s vision tower, locked (LiT); returns the folder
    of the full CLIPModel."""
    if not (out / "model" / "config.json").is_file():
        tower = load_llava(base)[0].model.vision_tower
        v = tower.config
        spec = ClipSpec(image_size=v.image_size, patch_size=v.patch_size, vision_hidden=v.hidden_size,
                        vision_layers=v.num_hidden_layers, heads=v.num_attention_heads)  # fmt: skip
        train_clip(data, out, spec, config, locked_vision=tower)
    return out / "model"


def label_accuracy(cache: LabelCache, data: Path, records: list[Record]) -> float:
    """Fraction of occupied cells whose top label names the object's colour or shape or the glyph."""
    hits = total = 0
    words = cache.words
    for r in records:
        idx, _ = cache.labels(r.image_path.relative_to(data).as_posix())
        for cell, content in cell_truth(r).items():
            total += 1
            hits += int(idx[cell, 0]) >= 0 and words[int(idx[cell, 0])] in content.values()
    return hits / max(total, 1)


def sea_labels(
    data: Path, clip_dir: Path, out: Path, top_n: int = 10, regions: int = 0
) -> dict[str, Any]:
    """Labels of the train split with the sign that labels held-out cells better (both tried on
    the val split: for a toy CLIP, SEA's -cos need not be right); returns what was chosen and why.
    `regions` 0: SEA's labels from the patch tokens; G: from G x G region crops."""
    summary_file = out / "choice.json"
    clip = CLIPModel.from_pretrained(clip_dir).eval()
    tok, image_processor = (
        load_tokenizer(data),
        build_image_processor(clip.config.vision_config.image_size),
    )
    words = label_words()

    def build(split: str, sign: float, folder: Path) -> LabelCache:
        images = [
            (r.image_path.relative_to(data).as_posix(), r.load_image)
            for r in load_split(data, split)
        ]
        return build_label_cache(clip, tok, image_processor, words, images, folder,
                                 image_root=data.resolve(), top_n=top_n, sign=sign, regions=regions,
                                 progress=False)  # fmt: skip

    val = load_split(data, "val")
    with torch.no_grad():
        accuracy = {sign: label_accuracy(build("val", sign, out / f"val{sign:+.0f}"), data, val)
                    for sign in (-1.0, 1.0)}  # fmt: skip
    sign = max(accuracy, key=accuracy.get)
    build("train", sign, out / "train")
    choice = {"sign": sign, "regions": regions, "labels": str(out / "train"),
              "val_top1_label_accuracy": {f"{k:+.0f}": v for k, v in accuracy.items()}}  # fmt: skip
    atomic_write_json(summary_file, choice)
    return choice


def oracle_labels(data: Path, out: Path, grid: int = 3) -> Path:
    """Labels of the train split from the world's truth (once): patch = cell (the lab's towers
    have one patch per cell), labels = its colour and shape, or its glyph, score 1; empty cells
    have none. Returns the cache folder."""
    if (out / "manifest.json").is_file():
        return out
    words = label_words()
    labels = []
    for r in load_split(data, "train"):
        indices = torch.full((grid * grid, 2), -1, dtype=torch.int32)  # (P, n)
        for cell, content in cell_truth(r).items():
            for k, word in enumerate(content.values()):
                indices[cell, k] = words.index(word)
        labels.append((r.image_path.relative_to(data).as_posix(), indices,
                       (indices >= 0).to(torch.float32)))  # fmt: skip
    save_label_cache(out, words, grid, labels, source="oracle:world-truth",
                     image_root=data.resolve())  # fmt: skip
    return out
