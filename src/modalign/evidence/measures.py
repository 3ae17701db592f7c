"""The measures a validation correlates with post-fine-tuning scores, read from a checkpoint's
measurement record (`measure_checkpoint`). Lower is better aligned for every one of them, so a
measure that predicts the scores correlates *negatively* with them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from modalign.registry import Registry


@dataclass(frozen=True)
class Measure:
    """How to read one scalar from a record, and what it is."""

    label: str
    read: Callable[[dict[str, Any]], float | None]
    part: str  # which part of the record it needs: mir, baselines or caption


MEASURES: Registry[Measure] = Registry("measure")


def _get(part: str, key: str, reduce: Callable[[Any], float] = float) -> Callable:
    def read(record: dict[str, Any]) -> float | None:
        section = record.get(part)
        if not section or section.get(key) is None:
            return None
        return reduce(section[key])

    return read


def _first(values: list[float]) -> float:
    return float(values[0])


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values))


for _name, _label, _part, _key, _reduce in (
    ("mir", "MIR", "mir", "mir", float),
    ("mmd", "MMD (first layer)", "baselines", "mmd", float),
    ("mmd_layerwise", "MMD (layer mean)", "baselines", "mmd_layerwise", float),
    ("kid", "KID (first layer)", "baselines", "kid", float),
    ("kid_layerwise", "KID (layer mean)", "baselines", "kid_layerwise", float),
    ("centroid_gap", "centroid gap (first layer)", "baselines", "centroid_gap_raw", _first),
    ("centroid_gap_layerwise", "centroid gap (layer mean)", "baselines", "centroid_gap_raw",
     _mean),
    ("cosine_gap", "cosine gap (first layer)", "baselines", "cosine_gap", _first),
    ("cosine_gap_layerwise", "cosine gap (layer mean)", "baselines", "cosine_gap", _mean),
    ("caption_loss", "caption loss", "caption", "caption_loss", float),
    ("perplexity", "caption perplexity", "caption", "perplexity", float),
):  # fmt: skip
    MEASURES.register(_name)(Measure(_label, _get(_part, _key, _reduce), _part))


def read_measures(record: dict[str, Any]) -> dict[str, float]:
    """Every measure the record holds, in table order (unmeasured parts are left out)."""
    out = {}
    for name, measure in MEASURES.items():
        value = measure.read(record)
        if value is not None:
            out[name] = value
    return out
