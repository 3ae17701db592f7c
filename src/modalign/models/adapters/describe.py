"""Human-readable rendering of one prepared sample with its vision and text spans marked."""

from __future__ import annotations

from typing import Any

from modalign.models.adapters.states import ModelBatch

LEGEND = "[VISION xN: token] = image positions; [TEXT a|b|c TEXT] = the passage's tokens"


def _runs(kinds: list[str]) -> list[tuple[int, int]]:
    """[start, end) of each maximal run of equal kinds."""
    out, j = [], 0
    while j < len(kinds):
        k = j
        while k < len(kinds) and kinds[k] == kinds[j]:
            k += 1
        out.append((j, k))
        j = k
    return out


def describe_sample(tokenizer: Any, batch: ModelBatch, i: int, family: str) -> str:
    """Row `i` of `batch` without padding: template text, image runs and passage tokens marked."""
    keep = batch.inputs["attention_mask"][i].bool()  # (T,)
    vis, txt = batch.vision_mask[i][keep], batch.text_mask[i][keep]
    row_ids = batch.inputs["input_ids"][i][keep].tolist()
    tokens = tokenizer.convert_ids_to_tokens(row_ids)
    kinds = ["vision" if v else "text" if t else "other" for v, t in zip(vis, txt, strict=True)]
    parts: list[str] = []
    for j, k in _runs(kinds):
        if kinds[j] == "vision":
            parts.append(f"[VISION x{k - j}: {tokens[j]}]")
        elif kinds[j] == "text":
            pieces = [repr(tokenizer.decode([t]))[1:-1] for t in row_ids[j:k]]
            parts.append("[TEXT " + "|".join(pieces) + " TEXT]")
        else:
            parts.append(repr(tokenizer.decode(row_ids[j:k]))[1:-1])
    meta = batch.sample_ids[i] if i < len(batch.sample_ids) else {}
    truncated = bool(batch.truncated and batch.truncated[i])
    head = (
        f"sample {i} ({family}, template={batch.template}, image={meta.get('image')!r}, "
        f"text={meta.get('text')!r}): {len(tokens)} tokens, {int(vis.sum())} vision, "
        f"{int(txt.sum())} text" + (" (passage truncated)" if truncated else "")
    )
    return head + "\n" + "".join(parts) + "\n" + LEGEND
