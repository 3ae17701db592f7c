"""lmms-eval's aggregated results files, read the way lmms-eval writes them:

    OUTPUT_PATH/<model name, sanitized>/<YYYYMMDD_HHMMSS>_results.json

one JSON object per run, with (among others) `results` (per task: `"<metric>,<filter>"` values,
their `"<metric>_stderr,<filter>"`, an `alias`), `configs` (per task: its YAML config, with
`metric_list` and `filter_list`), `higher_is_better` (per task, per metric), `n-samples` and
`config` (`model`, `model_args`: the `--model_args` string, e.g. `pretrained=runs/sft/model`).
A folder is searched recursively; files named like results but without that structure (task
submissions, `OUTPUT_PATH/submissions/*_results.json`) are left aside.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modalign.errors import DataError

RESULTS_SUFFIX = "_results.json"
STAMP = re.compile(r"^\d{8}_\d{6}")  # lmms-eval's datetime_str, "%Y%m%d_%H%M%S"
NOT_METRICS = ("alias", "samples", " ")  # task entries beside the metric keys
STDERR = re.compile(r"_stderr(_[a-z]+)?$")  # <metric>_stderr, _stderr_clt, _stderr_clustered


def _split_args(text: str) -> list[str]:
    """Split `--model_args` at commas outside quotes and brackets (as lmms-eval's own parser)."""
    parts, current, depth, quote = [], [], 0, None
    for i, char in enumerate(text):
        if char in "\"'" and (i == 0 or text[i - 1] != "\\"):
            quote = char if quote is None else (None if char == quote else quote)
        elif quote is None and char in "{[":
            depth += 1
        elif quote is None and char in "}]":
            depth -= 1
        elif char == "," and quote is None and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def pretrained_of(model_args: Any) -> str | None:
    """The `pretrained` entry of lmms-eval's `model_args` (a `k=v,...` string from the command
    line, or a mapping from its Python API); None when there is none.

    >>> pretrained_of("pretrained=runs/sft_a/model,device_map=auto")
    'runs/sft_a/model'
    """
    if isinstance(model_args, Mapping):
        value = model_args.get("pretrained")
    elif isinstance(model_args, str):
        pairs = (part.partition("=") for part in _split_args(model_args))
        value = next((v.strip() for k, sep, v in pairs if sep and k.strip() == "pretrained"), None)
    else:
        value = None
    return value if isinstance(value, str) and value.strip() else None


def is_metric_key(key: str) -> bool:
    """Whether a task entry's key is a metric value (`exact_match,none`), not its stderr, alias
    or sample count."""
    name, sep, _ = key.partition(",")
    return bool(sep) and key not in NOT_METRICS and not STDERR.search(name)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


@dataclass(frozen=True)
class EvalResults:
    """One lmms-eval results file: the model it scored and every task's metric values."""

    path: Path
    model: str  # the `pretrained=` value as lmms-eval recorded it
    stamp: str  # when it was written: the file name's time stamp (else its mtime, same form)
    results: Mapping[str, Mapping[str, Any]]
    configs: Mapping[str, Any] = field(default_factory=dict)
    higher_is_better: Mapping[str, Any] = field(default_factory=dict)

    def metrics(self, task: str) -> list[str]:
        """The task's metric keys whose value is a finite number, in the file's order."""
        entry = self.results.get(task) or {}
        return [k for k, v in entry.items() if is_metric_key(k) and _number(v) is not None]

    def tasks(self) -> list[str]:
        """Every task (or aggregating group) with at least one numeric metric."""
        return [t for t in self.results if self.metrics(t)]

    def primary(self, task: str) -> str | None:
        """The task's first metric: the first `metric_list` entry of its config with the first
        of its `filter_list` (`none` when it has none), where the file holds a number for it;
        else the first numeric metric key in the file (a group's aggregate has no config)."""
        config = self.configs.get(task)
        metrics = self.metrics(task)
        if isinstance(config, Mapping):
            listed = config.get("metric_list")
            first = listed[0] if isinstance(listed, list) and listed else None
            name = first.get("metric") if isinstance(first, Mapping) else None
            filters = config.get("filter_list")
            head = filters[0] if isinstance(filters, list) and filters else None
            fname = head.get("name") if isinstance(head, Mapping) else "none"
            if isinstance(name, str) and isinstance(fname, str) and f"{name},{fname}" in metrics:
                return f"{name},{fname}"
        return metrics[0] if metrics else None

    def score(self, task: str, metric: str) -> float:
        """The task's value of `metric` (a full `name,filter` key)."""
        entry = self.results.get(task)
        if not isinstance(entry, Mapping) or metric not in entry:
            have = ", ".join(self.metrics(task)) or "none"
            raise DataError(f"{self.path}: task {task!r} has no metric {metric!r} (has: {have})")
        value = _number(entry[metric])
        if value is None:
            raise DataError(f"{self.path}: {task} {metric} is {entry[metric]!r}, not a number")
        return value

    def lower_is_better(self, task: str, metric: str) -> bool:
        """Whether lmms-eval records `metric` of `task` as lower-is-better."""
        table = self.higher_is_better.get(task)
        flag = table.get(metric.partition(",")[0]) if isinstance(table, Mapping) else None
        return flag is False


def _stamp(path: Path) -> str:
    match = STAMP.match(path.name)
    if match:
        return match.group(0)
    return time.strftime("%Y%m%d_%H%M%S", time.localtime(path.stat().st_mtime))


def read_eval_results(path: str | Path) -> EvalResults:
    """One results file; DataError if it is not lmms-eval's aggregated results or names no
    `pretrained=` model."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a JSON file ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise DataError(f"{path}: not lmms-eval results (no 'results' object)")
    config = data.get("config")
    if not isinstance(config, dict) or "model_args" not in config:
        raise DataError(f"{path}: not lmms-eval results (no 'config' with 'model_args')")
    model = pretrained_of(config["model_args"])
    if model is None:
        raise DataError(f"{path}: model_args {config['model_args']!r} names no pretrained=PATH, "
                        "so it cannot be matched to a checkpoint")  # fmt: skip
    results = {k: v for k, v in data["results"].items() if isinstance(v, dict)}
    configs = data.get("configs") if isinstance(data.get("configs"), dict) else {}
    better = data.get("higher_is_better")
    return EvalResults(path, model, _stamp(path), results, configs,
                       better if isinstance(better, dict) else {})  # fmt: skip


def find_eval_results(path: str | Path) -> tuple[list[EvalResults], list[str]]:
    """The results files at `path` (a file, or a folder searched recursively for
    `*_results.json`) and one note per file left aside there; DataError when there is none, or
    when a file named on its own is not lmms-eval results."""
    path = Path(path)
    if path.is_file():
        return [read_eval_results(path)], []
    if not path.is_dir():
        raise DataError(f"--scores-from {path}: no such file or folder")
    found, skipped = [], []
    for candidate in sorted(path.rglob(f"*{RESULTS_SUFFIX}")):
        if not candidate.is_file():
            continue
        try:
            found.append(read_eval_results(candidate))
        except DataError as exc:
            skipped.append(f"left aside {exc}")
    if not found:
        why = f" ({len(skipped)} file(s) named so are not lmms-eval results)" if skipped else ""
        raise DataError(f"--scores-from {path}: no lmms-eval results file "
                        f"(<time>{RESULTS_SUFFIX}) under it{why}")  # fmt: skip
    return found, skipped
