"""The checkpoints a validation compares: a model (directory or hub id), the score the user
measured after fine-tuning it, and an optional group (e.g. a benchmark or a seed); scores read
from an evaluation tool's files also say where they came from (`scored`)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modalign.errors import DataError

DEFAULT_GROUP = "all"


@dataclass(frozen=True)
class Checkpoint:
    """One pre-trained checkpoint and its post-fine-tuning score (higher is better)."""

    model: str
    score: float
    group: str = DEFAULT_GROUP
    scored: Mapping[str, str] | None = None  # e.g. the results file, model and metric it is from

    def __post_init__(self) -> None:
        if not self.model:
            raise DataError("a checkpoint needs a model (directory or hub id)")
        if not math.isfinite(self.score):
            raise DataError(f"{self.model}: score must be a finite number, got {self.score}")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "score": self.score, "group": self.group}
        if self.scored is not None:
            out["scored"] = dict(self.scored)
        return out


def _entry(record: object, where: str, base: Path) -> Checkpoint:
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    missing = [k for k in ("model", "score") if k not in record]
    if missing:
        raise DataError(f"{where}: missing field(s) {', '.join(missing)} (need model and score)")
    model, score = record["model"], record["score"]
    if not isinstance(model, str) or not model.strip():
        raise DataError(f"{where}: 'model' must be a non-empty string")
    if isinstance(score, bool) or not isinstance(score, int | float):
        raise DataError(f"{where}: 'score' must be a number, got {score!r}")
    group = record.get("group", DEFAULT_GROUP)
    if not isinstance(group, str | int) or isinstance(group, bool) or str(group) == "":
        raise DataError(f"{where}: 'group' must be a non-empty string, got {group!r}")
    local = base / model
    model = str(local) if not Path(model).is_absolute() and local.exists() else model
    try:
        return Checkpoint(model, float(score), str(group))
    except DataError as exc:
        raise DataError(f"{where}: {exc}") from None


def read_checkpoints(path: str | Path) -> list[Checkpoint]:
    """Checkpoints from a JSONL file of {"model", "score", optional "group"} (blank lines and
    lines starting with # are skipped); relative model paths are taken from the file's folder."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DataError(f"cannot read checkpoints file {path}: {exc.strerror or exc}") from exc
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        out.append(_entry(record, f"{path}:{number}", path.parent))
    return check_checkpoints(out, str(path))


def checkpoints_from_lists(
    models: Sequence[str], scores: Sequence[float], groups: Sequence[str] | None = None
) -> list[Checkpoint]:
    """Checkpoints from parallel lists (repeated --model/--score[/--group] flags)."""
    if len(models) != len(scores):
        raise DataError(f"{len(models)} --model against {len(scores)} --score; give one each")
    if groups and len(groups) != len(models):
        raise DataError(f"{len(groups)} --group against {len(models)} --model; give all or none")
    out = [
        Checkpoint(m, float(s), groups[i] if groups else DEFAULT_GROUP)
        for i, (m, s) in enumerate(zip(models, scores, strict=True))
    ]
    return check_checkpoints(out, "the command line")


def check_checkpoints(entries: list[Checkpoint], where: str) -> list[Checkpoint]:
    """At least 3 checkpoints (a rank correlation needs them), no model twice in one group."""
    if len(entries) < 3:
        raise DataError(
            f"{where}: {len(entries)} checkpoint(s); a correlation needs at least 3 with scores"
        )
    seen: set[tuple[str, str]] = set()
    for e in entries:
        if (e.model, e.group) in seen:
            raise DataError(f"{where}: {e.model} is listed twice in group {e.group!r}")
        seen.add((e.model, e.group))
    return entries
