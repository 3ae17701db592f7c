"""Token-span arithmetic for building MIR sequences: passage spans, truncation, padding."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from modalign.errors import ConfigError, ModelError

# The system prompt of LLaVA's `conv_vicuna_v1` (conv_mode "vicuna_v1", which the official MIR
# script uses). Not `conv_llava_v1`, whose text says "curious human ... the human's questions".
VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
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
        raise ModelError(f"passage tokens are not contiguous: token indices {hits}")
    return s, e


def cut_text(tokenizer: Any, text: str, max_tokens: int) -> tuple[str, bool]:
    """`text` cut after its `max_tokens`-th token (tokenized alone); (text, was_truncated)."""
    if max_tokens < 1:
        raise ConfigError(f"max_text_tokens must be >= 1, got {max_tokens}")
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = [o for o in enc["offset_mapping"] if o[1] > o[0]]
    if len(offsets) <= max_tokens:
        return text, False
    return text[: offsets[max_tokens - 1][1]], True


def pad_sequences(rows: Sequence[Sequence[int]], value: int, side: str = "right") -> torch.Tensor:
    """Stack token rows of different lengths into a (B, T) long tensor, padding on `side`."""
    if side not in ("left", "right"):
        raise ConfigError(f"padding side must be 'left' or 'right', got {side!r}")
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)  # (B, T)
    for i, row in enumerate(rows):
        vals = torch.as_tensor(row, dtype=torch.long)
        if side == "right":
            out[i, : len(vals)] = vals
        else:
            out[i, width - len(vals) :] = vals
    return out


def pad_rows(
    rows: Sequence[dict[str, list[int]]], pad_values: dict[str, int], side: str
) -> dict[str, torch.Tensor]:
    """Per key, stack the rows' token arrays into (B, T) tensors padded on `side`."""
    return {
        key: pad_sequences([row[key] for row in rows], pad_values.get(key, 0), side)
        for key in rows[0]
    }
