"""The miniature world's data as training conversations (LLaVA's format), for the one training path.

Pre-training: one (image, caption) conversation per image and caption level. SFT: one conversation
per image holding all of its questions in a seeded order (multi-turn, LLaVA-style), or one per
question. `export_llava` also writes them as LLaVA JSON files, so `modalign train` runs on lab data.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from modalign.data import Conversation, write_conversations
from modalign_lab.world.captions import LEVELS
from modalign_lab.world.dataset import Record, load_split
from modalign_lab.world.samples import MIXED, check_level
from modalign_lab.world.vqa import QA


def caption_conversations(records: Sequence[Record], level: int) -> list[Conversation]:
    """(image, caption at `level`) pairs; MIXED gives one conversation per level per image."""
    levels = range(LEVELS) if check_level(level) == MIXED else (level,)
    return [
        Conversation(f"{r.image_id}:L{lv}", r.image_path, (("", r.captions[lv]),))
        for r in records
        for lv in levels
    ]


def vqa_conversations(
    records: Sequence[Record], *, multi_turn: bool = True, seed: int = 0
) -> list[Conversation]:
    """All questions of each image in one seeded-order chat, or one chat per question."""
    out = []
    for r in records:
        turns = [(qa.question, qa.answer) for qa in r.vqa]
        if multi_turn:
            random.Random(f"chat:{seed}:{r.image_id}").shuffle(turns)
            out.append(Conversation(r.image_id, r.image_path, tuple(turns)))
        else:
            out.extend(
                Conversation(f"{r.image_id}:q{j}", r.image_path, (turn,))
                for j, turn in enumerate(turns)
            )
    return out


def question_items(records: Sequence[Record]) -> list[tuple[Conversation, QA]]:
    """One single-question conversation per question, with its QA (type, answer) for scoring."""
    return [
        (Conversation(f"{r.image_id}:q{j}", r.image_path, ((qa.question, qa.answer),)), qa)
        for r in records
        for j, qa in enumerate(r.vqa)
    ]


def _records_json(conversations: Sequence[Conversation], root: Path) -> list[dict]:
    """LLaVA JSON records (image paths relative to the dataset root)."""
    rows = []
    for conv in conversations:
        messages = []
        for k, (question, answer) in enumerate(conv.turns):
            value = f"<image>\n{question}".rstrip() if k == 0 else question
            messages += [{"from": "human", "value": value}, {"from": "gpt", "value": answer}]
        image = conv.image.relative_to(root).as_posix() if conv.image else None
        rows.append({"id": conv.id, "image": image, "conversations": messages})
    return rows


def export_llava(data_dir: str | Path) -> list[Path]:
    """Write data_dir/llava/{pretrain_level0..3,sft}.json from the train split (images stay put)."""
    root = Path(data_dir)
    records = load_split(root, "train")
    written = [
        write_conversations(
            root / "llava" / f"pretrain_level{level}.json",
            _records_json(caption_conversations(records, level), root),
        )
        for level in range(LEVELS)
    ]
    written.append(
        write_conversations(
            root / "llava" / "sft.json", _records_json(vqa_conversations(records), root)
        )
    )
    return written
