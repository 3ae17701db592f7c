"""Recalled-word accuracy in the miniature world: how often an image token's nearest word (in the
LLM's input-embedding space) names what is really in its grid cell: the object's colour or shape,
or the glyph. One ViT patch per cell, so token i is cell i."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from modalign.errors import DataError
from modalign.methods.sea import recalled_words
from modalign.train import PeriodicProbe, unwrap
from modalign_lab.world.dataset import Record
from modalign_lab.world.vocab import label_words


def keeps_grid(model: Any) -> bool:
    """Whether the connector gives one token per vision patch (HF LLaVA's MLP, linear / MLP
    connectors), which recalled-word accuracy needs."""
    config = unwrap(model).config
    n = getattr(config, "vision_seq_length", None)  # set by connector models only
    return n is None or config.image_seq_length == n


def cell_truth(record: Record) -> dict[int, dict[str, str]]:
    """cell -> {"colour": ..., "shape": ...} or {"glyph": ...} for the occupied cells."""
    truth = {o.cell: {"colour": o.colour, "shape": o.shape} for o in record.scene.objects}
    if record.scene.glyph is not None and record.scene.glyph_cell is not None:
        truth[record.scene.glyph_cell] = {"glyph": record.scene.glyph}
    return truth


def recall_accuracy(model: Any, processor: Any, records: list[Record]) -> dict[str, Any]:
    """Fraction of occupied cells whose token's top-1 recalled word names the cell's content,
    overall and per kind (colour and shape over object cells, glyph over glyph cells)."""
    words = label_words()
    top, _ = recalled_words(model, processor, [r.load_image() for r in records], words, k=1)
    hits: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    recalled: Counter[str] = Counter()
    for r, tokens in zip(records, top[..., 0], strict=True):
        for cell, content in cell_truth(r).items():
            word = words[int(tokens[cell])]
            recalled[word] += 1
            totals["any"] += 1
            hits["any"] += word in content.values()
            for kind, value in content.items():
                totals[kind] += 1
                hits[kind] += word == value
    return {
        "accuracy": hits["any"] / max(totals["any"], 1),
        "by_kind": {k: hits[k] / totals[k] for k in ("colour", "shape", "glyph") if totals[k]},
        "cells": totals["any"],
        "most_recalled": [[word, n] for word, n in recalled.most_common(5)],  # JSON-ready
    }


class RecallTrace(PeriodicProbe):
    """Recalled-word accuracy of the image tokens (layer 0) every `every` steps of training,
    overall and per kind, on fixed records; logged as `recall`, `recall/KIND`, and written to
    out_dir/recall_curve.json. Needs a connector that keeps one token per patch."""

    kind = "recall_trace"
    curve = "recall_curve"

    def __init__(
        self, processor: Any, records: list[Record], every: int, out_dir: Path | None = None
    ) -> None:
        super().__init__(every, out_dir)
        if not records:
            raise DataError("recall trace: no records to measure on")
        self.processor, self.records = processor, list(records)

    def entry(self, model: Any, step: int) -> dict[str, Any]:
        result = recall_accuracy(unwrap(model), self.processor, self.records)
        return {"accuracy": result["accuracy"], "by_kind": result["by_kind"]}

    def logs(self, entry: dict[str, Any]) -> dict[str, float]:
        return {"recall": entry["accuracy"],
                **{f"recall/{k}": v for k, v in entry["by_kind"].items()}}  # fmt: skip

    def settings(self) -> dict[str, Any]:
        return {"every": self.every, "n_records": len(self.records)}
