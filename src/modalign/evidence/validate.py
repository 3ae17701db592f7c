"""Does a measure of pre-trained checkpoints predict their post-fine-tuning scores?

    report = validate(checkpoints, pairs, ValidateSettings(), cache_dir="runs/val/cache")

For every checkpoint: MIR, the streaming baselines (same forward passes) and the caption loss /
perplexity on the same probe pairs; each checkpoint's record is cached (`evidence.cache`) as
soon as it is measured, so a killed run resumes after the last finished checkpoint. A
checkpoint that fails (e.g. does not load) is reported and the run goes on. Then, per group
(and pooled when there are several), the Spearman, Kendall and Pearson correlation of each
measure with the scores, with bootstrap intervals over checkpoints.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from modalign.data.pairs import Pair
from modalign.errors import DataError
from modalign.evidence.cache import MeasureCache, cache_key, data_fingerprint, model_identity
from modalign.evidence.checkpoints import Checkpoint
from modalign.evidence.correlate import (
    MIN_INTERVAL_N,
    STATISTICS,
    bootstrap_intervals,
    correlations,
)
from modalign.evidence.measures import read_measures
from modalign.measure.layers import Layers
from modalign.measure.settings import TEMPLATES, MIRSettings
from modalign.settings import check_choices, option, option_like

POOLED = "all groups (pooled)"


@dataclass(frozen=True)
class ValidateSettings:
    """How each checkpoint is measured (all of it is part of the cache key but `batch_size`,
    `device` and `progress`, which do not change the numbers). The MIR settings are declared
    as `MIRSettings`' (`option_like`), with validate's own defaults.

    >>> ValidateSettings(template="plain").mir_settings(n=20).resolve().template
    'plain'
    """

    template: str = option_like(
        MIRSettings, "template", default="chat",
        help="MIR's sequence layout: the model's chat template with the passage as the assistant "
        "turn, plain = BOS + image tokens + passage tokens, official = the official MIR protocol",
    )  # fmt: skip
    loss_template: str = option(
        "plain", choices=TEMPLATES,
        help="layout of the caption loss (default plain: BOS + image + caption, the "
        "pre-training objective)",
    )  # fmt: skip
    layers: Layers | None = option_like(MIRSettings, "layers")
    max_text_tokens: int | None = option_like(MIRSettings, "max_text_tokens")
    outliers: str = option_like(
        MIRSettings, "outliers", default="drop", help="3-sigma norm outlier handling"
    )
    sqrt: str = option_like(MIRSettings, "sqrt", default="exact", help="trace-square-root backend")
    median: str = option_like(MIRSettings, "median")
    baselines: bool = option(
        True, flag="--no-baselines", negate=True, help="skip MMD/KID/centroid gaps"
    )
    baseline_tokens: int = option_like(MIRSettings, "baseline_tokens")
    caption_loss: bool = option(
        True, flag="--no-caption-loss", negate=True, help="skip caption loss / PPL"
    )
    dtype: str = option_like(MIRSettings, "dtype")
    seed: int = option(
        0, help="seed of the pair selection, of the baselines' token sample and of the bootstrap"
    )  # (the pairs are drawn by the caller)
    batch_size: int = option_like(MIRSettings, "batch_size")
    device: str | None = option_like(MIRSettings, "device")
    progress: bool = option(False, cli=False, help="show progress bars")

    def __post_init__(self) -> None:
        if self.layers is not None and not isinstance(self.layers, Layers):
            object.__setattr__(self, "layers", Layers.coerce(self.layers))
        check_choices(self)

    def identity(self) -> dict[str, Any]:
        """The settings that determine the measured numbers."""
        out = asdict(self)
        for key in ("batch_size", "device", "progress"):
            out.pop(key)
        out["layers"] = list(self.layers) if self.layers is not None else None
        return out

    def mir_settings(self, n: int) -> MIRSettings:
        """The MIR run settings of one checkpoint's measurement on `n` pairs."""
        return MIRSettings(
            n=n, seed=self.seed, batch_size=self.batch_size, template=self.template,
            max_text_tokens=self.max_text_tokens, layers=self.layers, device=self.device,
            dtype=self.dtype, sqrt=self.sqrt, outliers=self.outliers, median=self.median,
            baselines=self.baselines, baseline_tokens=self.baseline_tokens,
            progress=self.progress,
        )  # fmt: skip


def measure_checkpoint(model: str, pairs: Sequence[Pair], settings: ValidateSettings) -> dict:
    """Load `model` and measure it on `pairs`: {"mir": MIRResult dict, "baselines": {...},
    "caption": {...}, "wall_s"}; the model is released afterwards."""
    import torch

    from modalign.evidence.caption_loss import caption_loss
    from modalign.measure.run import run_mir
    from modalign.models import load_adapter

    started = time.perf_counter()
    adapter = load_adapter(model, device=settings.device, dtype=settings.dtype)
    try:
        result = run_mir(adapter, pairs, settings.mir_settings(len(pairs)))
        record: dict[str, Any] = {"baselines": result.metadata.pop("baselines", None)}
        record["mir"] = result.to_dict()
        if settings.caption_loss:
            loss = caption_loss(
                adapter, pairs, template=settings.loss_template, batch_size=settings.batch_size,
                max_text_tokens=settings.max_text_tokens, progress=settings.progress,
            )  # fmt: skip
            record["caption"] = loss.to_dict()
        record["model_type"] = adapter.model.config.model_type
    finally:
        del adapter
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    record["wall_s"] = round(time.perf_counter() - started, 2)
    return record


def validate(
    checkpoints: Sequence[Checkpoint],
    pairs: Sequence[Pair],
    settings: ValidateSettings,
    cache_dir: Any,
    *,
    resamples: int = 1000,
    level: float = 0.95,
    log: Callable[[str], None] = print,
    measure: Callable[[str, Sequence[Pair], ValidateSettings], dict] = measure_checkpoint,
    pool: bool = True,
) -> dict[str, Any]:
    """Measure every checkpoint (cached), then correlate each measure with the scores.

    `measure`: how one checkpoint is measured (tests and the lab may pass their own).
    `pool`: also correlate over all groups together (not for scores on different scales).
    Returns the report: settings, data fingerprint, one row per checkpoint (measures or the
    error), correlations per group and warnings.
    """
    if not checkpoints:
        raise DataError("no checkpoints to validate")
    if not pairs:
        raise DataError("no probe pairs to measure the checkpoints on")
    settings.mir_settings(len(pairs)).resolve()  # refuse bad settings before any work
    data = data_fingerprint(pairs)
    cache = MeasureCache(cache_dir)
    key_settings = {**settings.identity(), "n": len(pairs)}
    rows: list[dict[str, Any]] = []
    for i, ck in enumerate(checkpoints, 1):
        key = cache_key(model_identity(ck.model), data, key_settings)
        record = cache.get(key)
        where = f"[validate {i}/{len(checkpoints)}] {ck.model}"
        if record is None:
            try:
                record = measure(ck.model, pairs, settings)
            except Exception as exc:  # any failure of one checkpoint is reported, run goes on
                error = f"{type(exc).__name__}: {exc}"
                log(f"{where}: FAILED ({error}); going on")
                rows.append({**ck.to_dict(), "error": error})
                continue
            cache.put(key, record)
            how = f"measured in {record.get('wall_s', 0):.1f} s"
        else:
            how = "cached"
        values = read_measures(record)
        rows.append({**ck.to_dict(), "key": key, "measures": values})
        shown = ", ".join(f"{k} {values[k]:.4g}" for k in ("mir", "caption_loss") if k in values)
        log(f"{where}: {shown} ({how})")
    correlations_by_group, warnings = correlate_rows(rows, resamples=resamples, level=level,
                                                     seed=settings.seed, pool=pool)  # fmt: skip
    failed = [r for r in rows if "error" in r]
    if failed:
        warnings.insert(0, f"{len(failed)} checkpoint(s) failed and are left out: "
                        + "; ".join(f"{r['model']} ({r['error']})" for r in failed))  # fmt: skip
    return {
        "settings": key_settings,
        "data": {"fingerprint": data, "n": len(pairs)},
        "bootstrap": {"resamples": resamples, "level": level, "seed": settings.seed},
        "checkpoints": rows,
        "correlations": correlations_by_group,
        "warnings": warnings,
    }


def correlate_rows(
    rows: Sequence[dict[str, Any]], *, resamples: int = 1000, level: float = 0.95, seed: int = 0,
    pool: bool = True,
) -> tuple[dict[str, dict[str, Any]], list[str]]:  # fmt: skip
    """Per group (and pooled over groups when there are several and `pool`): every measure's
    correlations with the score and their bootstrap intervals; plus warnings for what cannot be
    computed."""
    measured = [r for r in rows if "measures" in r]
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in measured:
        groups.setdefault(r["group"], []).append(r)
    if len(groups) > 1 and pool:
        groups[POOLED] = measured
    out: dict[str, dict[str, Any]] = {}
    warnings: list[str] = []
    for group, members in groups.items():
        scores = [r["score"] for r in members]
        if len(members) < 3:
            warnings.append(f"group {group!r}: {len(members)} measured checkpoint(s); "
                            "correlations need at least 3")  # fmt: skip
        elif max(scores) == min(scores):
            warnings.append(f"group {group!r}: every score is {scores[0]}; correlations are "
                            "undefined for constant scores")  # fmt: skip
        names = list(dict.fromkeys(k for r in members for k in r["measures"]))
        table = {}
        for name in names:
            have = [r for r in members if name in r["measures"]]
            x = [r["measures"][name] for r in have]
            y = [r["score"] for r in have]
            table[name] = {
                "n": len(have),
                **correlations(x, y),
                "ci": bootstrap_intervals(x, y, resamples=resamples, level=level, seed=seed),
            }
        out[group] = table
    return out, warnings


def usable(report: dict[str, Any]) -> bool:
    """Whether any correlation could be computed."""
    return any(
        stats.get(s) is not None
        for table in report["correlations"].values()
        for stats in table.values()
        for s in STATISTICS
    )


def small_groups(report: dict[str, Any], threshold: int = MIN_INTERVAL_N) -> dict[str, int]:
    """The groups whose correlations rest on 3 to `threshold` - 1 checkpoints (their most
    measured measure's n), where an interval does not mean anything (`MIN_INTERVAL_N`); fewer
    than 3 have no correlation at all and are warned about already."""
    out = {}
    for group, table in report["correlations"].items():
        n = max((stats["n"] for stats in table.values()), default=0)
        if 3 <= n < threshold:
            out[group] = n
    return out


def flag_small_n(report: dict[str, Any], threshold: int = MIN_INTERVAL_N) -> dict[str, Any]:
    """`report` with `small_n` (the threshold and each group below it) and one warning per such
    group: its intervals are computed and kept, but mean nothing."""
    small = small_groups(report, threshold)
    lines = [f"group {group!r}: {n} checkpoint(s), fewer than {threshold}: too few for a "
             f"bootstrap interval to mean anything (it collapses or spans [-1, 1]); read its "
             f"correlations as a hint, not evidence" for group, n in small.items()]  # fmt: skip
    return {**report, "small_n": {"threshold": threshold, "groups": small},
            "warnings": [*report["warnings"], *lines]}  # fmt: skip
