"""Held-out evaluation: caption loss (pre-training objective) and VQA accuracy per question type.

VQA uses greedy decoding (max a few tokens, stop at </s>) and exact match of the decoded answer,
so a wrong word or extra words count as errors; no answer candidates are given to the model.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import torch
from torch.utils.data import DataLoader

from modalign.lab.collators import IGNORE, CaptionCollator, SFTCollator
from modalign.lab.io import num_image_tokens
from modalign.lab.samples import CaptionDataset, VQADataset
from modalign.lab.world.dataset import Record
from modalign.lab.world.vocab import COLOURS, GLYPHS, POSITIONS, SHAPES

# Uniform-guess accuracy per type (count: the 4 possible numbers).
CHANCE: dict[str, float] = {
    "colour": 1 / len(COLOURS),
    "shape": 1 / len(SHAPES),
    "count": 1 / 4,
    "position": 1 / len(POSITIONS),
    "existence": 1 / 2,
    "glyph": 1 / len(GLYPHS),
}


@torch.no_grad()
def caption_loss(
    model, processor, records: list[Record], level: int, batch_size: int = 32
) -> float:
    """Mean per-token NLL of the captions (and </s>) given the image, 'plain' template."""
    collate = CaptionCollator(
        processor.tokenizer, processor.image_processor, num_image_tokens(processor)
    )
    loader = DataLoader(CaptionDataset(records, level), batch_size=batch_size, collate_fn=collate)
    model.eval()
    total, count = 0.0, 0
    for batch in loader:
        labels = batch.pop("labels")
        logits = model(**batch).logits[:, :-1]  # (B, T-1, V)
        target = labels[:, 1:]  # (B, T-1)
        nll = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(),
            target.reshape(-1),
            ignore_index=IGNORE,
            reduction="sum",
        )
        total += nll.item()
        count += int((target != IGNORE).sum())
    return total / count


def _normalise(text: str) -> str:
    """Compare answers without surrounding spaces or a final full stop."""
    return text.strip().rstrip(".").strip()


@torch.no_grad()
def vqa_accuracy(
    model, processor, records: list[Record], batch_size: int = 64, max_new_tokens: int = 4
) -> dict[str, dict[str, float]]:
    """Exact-match accuracy per question type, with uniform chance and majority-answer baselines."""
    tok = processor.tokenizer
    collate = SFTCollator(tok, processor.image_processor, num_image_tokens(processor))
    data = VQADataset(records)
    loader = DataLoader(data, batch_size=batch_size, collate_fn=lambda items: items)
    model.eval()
    hits: dict[str, list[bool]] = defaultdict(list)
    answers: dict[str, Counter] = defaultdict(Counter)
    for items in loader:
        batch = collate.generation_batch(items)
        out = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        new = out[:, batch["input_ids"].shape[1] :]  # (B, new tokens)
        for it, ids in zip(items, new, strict=True):
            pred = _normalise(tok.decode(ids, skip_special_tokens=True))
            hits[it.qtype].append(pred == it.answer)
            answers[it.qtype][it.answer] += 1
    report = {}
    for qtype in sorted(hits):
        n = len(hits[qtype])
        report[qtype] = {
            "accuracy": sum(hits[qtype]) / n,
            "n": n,
            "chance": CHANCE.get(qtype, float("nan")),
            "majority": answers[qtype].most_common(1)[0][1] / n,
        }
    n_all = sum(len(h) for h in hits.values())
    report["all"] = {"accuracy": sum(sum(h) for h in hits.values()) / n_all, "n": n_all}
    return report
