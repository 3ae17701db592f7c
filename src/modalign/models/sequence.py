"""Token-span arithmetic for building MIR sequences: passage spans, truncation, padding."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

# The official MIR protocol wraps the passage in LLaVA's vicuna_v1 conversation.
VICUNA_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)


@dataclass
class RowSpec:
    """How to build one sequence: a processor-expanded head, token ids appended after it, and
    where the passage sits, counted from the end of the finished row."""

    head: str  # text given to the processor (contains the image placeholder)
    tail_ids: list[int] = field(default_factory=list)  # appended after the processor's tokens
    tail_type: int = 0  # token_type_ids value for appended tokens (PaliGemma suffix: 1)
    text_len: int | None = None  # passage length in tokens; None = every token after the image
    text_end_offset: int = 0  # tokens after the passage's last token
    check_ids: list[int] = field(default_factory=list)  # expected last ids of the processor row
    add_special_tokens: bool = True  # whether the tokenizer adds BOS/EOS to `head`
    truncated: bool = False


def overlapping_span(offsets: Sequence[tuple[int, int]], start: int, end: int) -> tuple[int, int]:
    """Indices [s, e) of the tokens whose character span overlaps [start, end).

    A token that straddles the boundary (e.g. a leading space merged into the passage's first
    word by a byte-level BPE) counts as the passage's: it carries passage content.
    """
    hits = [i for i, (a, b) in enumerate(offsets) if b > a and b > start and a < end]
    if not hits:
        return 0, 0
    s, e = hits[0], hits[-1] + 1
    if hits != list(range(s, e)):
        raise ValueError(f"passage tokens are not contiguous: token indices {hits}")
    return s, e


def cut_text(tokenizer: Any, text: str, max_tokens: int) -> tuple[str, bool]:
    """`text` cut after its `max_tokens`-th token (tokenized alone); (text, was_truncated)."""
    if max_tokens < 1:
        raise ValueError(f"max_text_tokens must be >= 1, got {max_tokens}")
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = [o for o in enc["offset_mapping"] if o[1] > o[0]]
    if len(offsets) <= max_tokens:
        return text, False
    return text[: offsets[max_tokens - 1][1]], True


def pad_rows(
    rows: Sequence[dict[str, list[int]]], pad_values: dict[str, int], side: str
) -> dict[str, torch.Tensor]:
    """Stack per-row token arrays into (B, T) tensors, padding on `side` ('left' or 'right')."""
    if side not in ("left", "right"):
        raise ValueError(f"padding side must be 'left' or 'right', got {side!r}")
    width = max(len(r["input_ids"]) for r in rows)
    out: dict[str, torch.Tensor] = {}
    for key in rows[0]:
        batch = torch.full((len(rows), width), pad_values.get(key, 0), dtype=torch.long)  # (B, T)
        for i, row in enumerate(rows):
            vals = torch.tensor(row[key], dtype=torch.long)
            if side == "right":
                batch[i, : len(vals)] = vals
            else:
                batch[i, width - len(vals) :] = vals
        out[key] = batch
    return out


def row_offset(attention_mask: torch.Tensor, side: str) -> int:
    """Index of a row's first real token in a padded (T,) attention mask."""
    return int((attention_mask == 0).sum()) if side == "left" else 0
