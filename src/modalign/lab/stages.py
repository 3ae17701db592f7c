"""The lab's training stages, directory in -> directory out: data, CLIP, LM, pre-train, SFT.

Each stage writes OUT/model (save_pretrained, safetensors), OUT/train_log.json and
OUT/metrics.json, and resumes from OUT/checkpoints when re-run after an interruption.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoTokenizer, CLIPModel, LlamaForCausalLM

from modalign.lab.clip_loss import negclip_loss
from modalign.lab.clip_model import build_clip
from modalign.lab.collators import (
    CaptionCollator,
    ChatCollator,
    ClipCollator,
    LMCollator,
    SFTCollator,
)
from modalign.lab.evaluate import caption_loss, vqa_accuracy
from modalign.lab.io import load_llava, num_image_tokens
from modalign.lab.llava import (
    assemble_llava,
    build_image_processor,
    build_processor,
    reset_connector,
    save_llava,
)
from modalign.lab.lm_model import build_lm
from modalign.lab.mir import MIRTrace, eval_pairs
from modalign.lab.samples import (
    MIXED,
    CaptionDataset,
    ChatDataset,
    PackedTextDataset,
    VQADataset,
)
from modalign.lab.specs import ClipSpec, LMSpec
from modalign.lab.tokenizer import train_tokenizer
from modalign.lab.trainer import TrainConfig, train
from modalign.lab.world.dataset import load_corpus, load_split, read_manifest, write_dataset


def _write_json(path: Path, obj: dict) -> None:
    """Pretty JSON, creating parents."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def make_data(
    out: Path,
    *,
    seed: int,
    sizes: dict[str, int],
    image_size: int,
    corpus_scenes: int,
    tokenizer_from: Path | None = None,
) -> Path:
    """Generate the world's splits and corpus, and train the tokenizer on corpus + captions.

    `tokenizer_from` copies an existing tokenizer instead (to train on top of existing towers).
    """
    out = Path(out)
    write_dataset(out, seed=seed, sizes=sizes, image_size=image_size, corpus_scenes=corpus_scenes)
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
        raise FileNotFoundError(f"{path} missing: run `modalign lab data --out {data_dir}` first")
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
) -> dict:
    """Contrastive CLIP training on (image, caption of every level) pairs of the train split.

    hard_negatives adds one minimally edited caption per image (NegCLIP), so captions that
    differ in a single shape, colour, place or glyph must be told apart;
    `val_hard_negative_accuracy` measures exactly that on held-out images.
    """
    manifest = read_manifest(data_dir)
    if manifest["image_size"] != spec.image_size:
        raise ValueError(
            f"data has {manifest['image_size']} px images but ClipSpec.image_size={spec.image_size}"
        )
    tok = load_tokenizer(data_dir)
    clip = build_clip(tok, spec, config.seed)
    collate = ClipCollator(tok, build_image_processor(spec.image_size), spec.max_text_tokens)
    neg_seed = config.seed if hard_negatives else None
    train_data = CaptionDataset(load_split(data_dir, "train", limit), MIXED, neg_seed)
    loss = negclip_loss if hard_negatives else None
    log = train(clip, train_data, collate, config, out, compute_loss=loss)
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
    clip.save_pretrained(out / "model")
    tok.save_pretrained(out / "model")
    _write_json(Path(out) / "metrics.json", metrics)
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
    log = train(lm, PackedTextDataset(lines, tok, block_size), collate, config, out)
    val_lines = [c for r in load_split(data_dir, "val", limit) for c in r.captions]
    metrics = {
        "val_caption_text_loss": lm_loss(lm, collate, val_lines),
        "train_loss": log["train_loss"],
    }
    lm.save_pretrained(out / "model")
    tok.save_pretrained(out / "model")
    _write_json(Path(out) / "metrics.json", metrics)
    return metrics


def _set_trainable(model, parts: tuple[str, ...]) -> int:
    """Freeze everything except the named submodules of model.model (+ lm_head); returns #trainable."""
    for p in model.parameters():
        p.requires_grad_(False)
    for name in parts:
        module = model.lm_head if name == "lm_head" else getattr(model.model, name)
        for p in module.parameters():
            p.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _model_dir(path: Path) -> Path:
    """A stage directory's model/ subfolder, or the path itself if it is a model directory."""
    path = Path(path)
    return path / "model" if (path / "model").is_dir() else path


def pretrain(
    data_dir: Path,
    clip_dir: Path,
    lm_dir: Path,
    out: Path,
    config: TrainConfig,
    *,
    level: int = 3,
    limit: int | None = None,
    mir_every: int = 0,
    mir_samples: int = 100,
) -> dict:
    """LLaVA stage 1 from separately trained towers: connector only, image -> caption."""
    tok = load_tokenizer(data_dir)
    clip = CLIPModel.from_pretrained(_model_dir(clip_dir))
    lm = LlamaForCausalLM.from_pretrained(_model_dir(lm_dir))
    model = assemble_llava(clip, lm, tok, config.seed)
    vision = clip.config.vision_config
    processor = build_processor(tok, vision.image_size, vision.patch_size)
    return _pretrain(model, processor, data_dir, out, config, level, limit, mir_every, mir_samples)


def pretrain_from_llava(
    data_dir: Path,
    base: Path,
    out: Path,
    config: TrainConfig,
    *,
    level: int = 3,
    limit: int | None = None,
    mir_every: int = 0,
    mir_samples: int = 100,
) -> dict:
    """LLaVA stage 1 on a saved LLaVA's towers with a fresh (seeded) connector."""
    model, processor = load_llava(_model_dir(base))
    reset_connector(model, config.seed)
    return _pretrain(model, processor, data_dir, out, config, level, limit, mir_every, mir_samples)


def _pretrain(
    model,
    processor,
    data_dir: Path,
    out: Path,
    config: TrainConfig,
    level: int,
    limit: int | None,
    mir_every: int = 0,
    mir_samples: int = 100,
) -> dict:
    """Shared body: freeze all but the connector, train on captions, compare with fresh loss.

    mir_every > 0 also records MIR on the first `mir_samples` test pairs every that many steps.
    """
    tok = processor.tokenizer
    n_train = _set_trainable(model, ("multi_modal_projector",))
    collate = CaptionCollator(tok, processor.image_processor, num_image_tokens(processor))
    test = load_split(data_dir, "test", limit)
    eval_level = 3 if level == MIXED else level
    fresh_loss = caption_loss(model, processor, test, eval_level)
    trace = None
    if mir_every:
        trace = MIRTrace(processor, eval_pairs(data_dir, "test", mir_samples), mir_every)
    log = train(
        model,
        CaptionDataset(load_split(data_dir, "train", limit), level),
        collate,
        config,
        out,
        callbacks=[trace] if trace else None,
    )
    metrics = {
        "caption_level": level,
        "trainable_params": n_train,
        "test_caption_loss": caption_loss(model, processor, test, eval_level),
        "test_caption_loss_fresh_connector": fresh_loss,
        "train_loss": log["train_loss"],
    }
    if trace is not None:
        metrics["mir_trace"] = trace.history
    save_llava(model, processor, Path(out) / "model")
    _write_json(Path(out) / "metrics.json", metrics)
    return metrics


def sft(
    data_dir: Path,
    model_dir: Path,
    out: Path,
    config: TrainConfig,
    limit: int | None = None,
    *,
    multi_turn: bool = False,
    unlock_vision: bool = False,
) -> dict:
    """LLaVA stage 2: connector + LLM on VQA in the chat template (vision tower frozen).

    Default: one single-turn sample per question (every answer must come from the image; in
    our runs this grounded position/shape answers better). multi_turn: one LLaVA-style
    conversation per image holding all of its questions in a seeded order.
    unlock_vision also trains the vision tower (an "unlock all" strategy; LLaVA-1.5 keeps it frozen).
    """
    model, processor = load_llava(_model_dir(model_dir))
    parts = ("multi_modal_projector", "language_model", "lm_head")
    n_train = _set_trainable(model, (*parts, "vision_tower") if unlock_vision else parts)
    records = load_split(data_dir, "train", limit)
    args = (processor.tokenizer, processor.image_processor, num_image_tokens(processor))
    if multi_turn:
        data, collate = ChatDataset(records, config.seed), ChatCollator(*args)
    else:
        data, collate = VQADataset(records), SFTCollator(*args)
    log = train(model, data, collate, config, out)
    metrics = {
        "trainable_params": n_train,
        "multi_turn": multi_turn,
        "train_loss": log["train_loss"],
    }
    save_llava(model, processor, Path(out) / "model")
    _write_json(Path(out) / "metrics.json", metrics)
    return metrics


def evaluate(
    model_dir: Path,
    data_dir: Path,
    split: str = "test",
    *,
    level: int = 3,
    limit: int | None = None,
) -> dict:
    """Caption loss and per-type VQA accuracy of a saved LLaVA on a held-out split."""
    model, processor = load_llava(_model_dir(model_dir))
    records = load_split(data_dir, split, limit)
    return {
        "split": split,
        "caption_level": level,
        "caption_loss": caption_loss(model, processor, records, level),
        "vqa": vqa_accuracy(model, processor, records),
    }
