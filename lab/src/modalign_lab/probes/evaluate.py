"""Held-out evaluation: caption loss (the pre-training objective) and VQA accuracy per question type.

Both build their batches with the training collators (`modalign.models.collate`), so what is
scored is exactly what was trained. VQA uses greedy decoding (a few tokens, stop at </s>) and
exact match of the decoded answer: a wrong word or extra words count as errors; no answer
candidates are given to the model.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import torch

from modalign.data import ConversationDataset
from modalign.models import IGNORE, ChatCollator, PlainCollator
from modalign_lab.world.conversations import caption_conversations, question_items
from modalign_lab.world.dataset import Record
from modalign_lab.world.vocab import COLOURS, GLYPHS, POSITIONS, SHAPES

# Uniform-guess accuracy per type (count: the 4 possible numbers).
CHANCE: dict[str, float] = {
    "colour": 1 / len(COLOURS),
    "shape": 1 / len(SHAPES),
    "count": 1 / 4,
    "position": 1 / len(POSITIONS),
    "existence": 1 / 2,
    "glyph": 1 / len(GLYPHS),
}


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def caption_loss(
    model, processor, records: list[Record], level: int, batch_size: int = 32
) -> float:
    """Mean per-token NLL of the captions (and </s>) given the image, 'plain' template."""
    collate = PlainCollator(processor, end="eos")
    data = ConversationDataset(caption_conversations(records, level))
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(data), batch_size):
        batch = collate([data[i] for i in range(start, min(start + batch_size, len(data)))])
        batch = {k: v.to(_device(model)) for k, v in batch.items()}
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


@torch.no_grad()
def text_loss(model, processor, lines: list[str], batch_size: int = 64) -> float:
    """Mean per-token NLL of text alone (BOS + line + EOS, no image): the LLM's language skill,
    SEA's argument that alignment should not cost it (their MMLU after SFT)."""
    from modalign.models import pad_sequences

    tok = processor.tokenizer
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(lines), batch_size):
        rows = [[tok.bos_token_id, *tok(t, add_special_tokens=False)["input_ids"], tok.eos_token_id]
                for t in lines[start : start + batch_size]]  # fmt: skip
        ids = pad_sequences(rows, tok.pad_token_id).to(_device(model))  # (B, T)
        mask = pad_sequences([[1] * len(r) for r in rows], 0).to(_device(model))
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]  # (B, T-1, V)
        target = ids[:, 1:].masked_fill(mask[:, 1:] == 0, IGNORE)
        total += torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1),
            ignore_index=IGNORE, reduction="sum",
        ).item()  # fmt: skip
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
    collate = ChatCollator(processor)
    items = question_items(records)
    data = ConversationDataset([conv for conv, _ in items])
    model.eval()
    hits: dict[str, list[bool]] = defaultdict(list)
    answers: dict[str, Counter] = defaultdict(Counter)
    for start in range(0, len(items), batch_size):
        chunk = range(start, min(start + batch_size, len(items)))
        batch = collate.generation_batch([data[i] for i in chunk])
        batch = {k: v.to(_device(model)) for k, v in batch.items()}
        out = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        new = out[:, batch["input_ids"].shape[1] :]  # (B, new tokens)
        for i, ids in zip(chunk, new, strict=True):
            qa = items[i][1]
            pred = _normalise(tok.decode(ids, skip_special_tokens=True))
            hits[qa.qtype].append(pred == qa.answer)
            answers[qa.qtype][qa.answer] += 1
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
