"""Checkpoints and their scores from lmms-eval results files: which file scored which checkpoint
(by the `pretrained=` path it records), which task and metric are correlated, one group per
task (tasks have their own scales, so they are never pooled).

A file scores a checkpoint when its model is that checkpoint, or is the model a `modalign train
--stage sft` run saved from it (the run's record names the model it started from): the usual
loop pre-trains variants, fine-tunes each, evaluates the fine-tuned models with lmms-eval, and
asks whether a measure of the pre-trained variant predicts the score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modalign.errors import ConfigError, DataError
from modalign.evidence.checkpoints import Checkpoint
from modalign.evidence.lmms_results import EvalResults
from modalign.settings import option


@dataclass(frozen=True)
class LmmsEvalScores:
    """Where `validate` reads post-fine-tuning scores from lmms-eval, and which it correlates."""

    scores_from: Path | None = option(
        None, metavar="PATH",
        help="lmms-eval results: a <time>_results.json file, or a folder (lmms-eval's "
        "--output_path) searched recursively; each file maps to its checkpoint by the "
        "pretrained= path in its model_args",
    )  # fmt: skip
    task: tuple[str, ...] = option(
        (), metavar="NAME",
        help="a task of the results to correlate, each its own group (default: every task found)",
    )  # fmt: skip
    metric: tuple[str, ...] = option(
        (), metavar="KEY",
        help="the metric to correlate, as lmms-eval keys it (exact_match,none; a bare name "
        "when one filter has it), or TASK=KEY for one task (default: the task's first metric: "
        "the first metric_list entry of its config, with its first filter)",
    )  # fmt: skip

    def __post_init__(self) -> None:
        if (self.task or self.metric) and self.scores_from is None:
            raise ConfigError("--task and --metric choose among lmms-eval results: give "
                              "--scores-from PATH")  # fmt: skip
        bare = [m for m in self.metric if "=" not in m]
        if len(bare) > 1:
            raise ConfigError(f"--metric given {len(bare)} times for every task "
                              f"({', '.join(bare)}); give one, or TASK=KEY per task")  # fmt: skip
        named = [m.partition("=") for m in self.metric if "=" in m]
        tasks = [t for t, _, _ in named]
        if any(not t or not key for t, _, key in named) or len(set(tasks)) < len(tasks):
            raise ConfigError(f"--metric TASK=KEY: each task once, with a key (given: "
                              f"{', '.join(self.metric)})")  # fmt: skip
        unselected = [t for t in tasks if self.task and t not in self.task]
        if unselected:
            raise ConfigError(f"--metric names task(s) {', '.join(unselected)} that no --task "
                              "selects")  # fmt: skip

    def named_tasks(self) -> list[str]:
        """The tasks named by --task or by a TASK=KEY --metric."""
        named = [m.partition("=")[0] for m in self.metric if "=" in m]
        return list(dict.fromkeys([*self.task, *named]))

    def metric_for(self, task: str) -> str | None:
        """The metric asked for `task` (TASK=KEY over a bare KEY), or None for the default."""
        for spec in self.metric:
            name, sep, key = spec.partition("=")
            if sep and name == task:
                return key
        return next((m for m in self.metric if "=" not in m), None)


@dataclass(frozen=True)
class LmmsScoreTable:
    """What the results files give validate: the checkpoints (one per task that scored them),
    the metric of each task and how it was chosen, the files used, and one line per thing left
    out."""

    checkpoints: list[Checkpoint]
    tasks: dict[str, dict[str, str]]
    files: list[str]
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"from": "lmms-eval", "tasks": self.tasks, "files": self.files}


def local(model: str) -> str:
    """A model as compared: a local path resolved (links, `..`, relative to the current folder),
    a hub id as written."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def fine_tuned_from(model: str) -> str | None:
    """The model a `modalign train --stage sft` run started from, when `model` is the model
    folder such a run saved (read from its record); else None."""
    if not Path(model).is_dir():
        return None
    from modalign.train.inputs import recorded_inputs

    inputs = recorded_inputs(model)
    return local(inputs.model) if inputs is not None and inputs.stage == "sft" else None


def _newest_first(results: Sequence[EvalResults]) -> list[EvalResults]:
    return sorted(results, key=lambda r: (r.stamp, str(r.path)), reverse=True)


def _match(
    found: Sequence[EvalResults], models: Sequence[str], warnings: list[str]
) -> dict[int, str]:
    """File index -> the checkpoint it scored: the model given (as the user wrote it) that is
    the file's model or the model it was fine-tuned from; with none given, that model itself."""
    given = {local(m): m for m in models}
    owner: dict[int, str] = {}
    for i, result in enumerate(found):
        evaluated = local(result.model)
        source = fine_tuned_from(evaluated)
        if not given:
            owner[i] = source or evaluated
        elif evaluated in given or source in given:
            owner[i] = given[evaluated if evaluated in given else source]
        else:
            tuned = f" (fine-tuned from {source})" if source else ""
            warnings.append(f"{result.path}: scored {result.model}{tuned}, which is no "
                            "checkpoint given; left out")  # fmt: skip
    if not owner:
        scored = ", ".join(sorted({r.model for r in found}))
        raise DataError(f"none of the {len(found)} lmms-eval results file(s) scored a checkpoint "
                        f"given (they scored: {scored})")  # fmt: skip
    return owner


def _metric_key(spec: str, task: str, have: Sequence[str]) -> str | None:
    """`spec` as one of the task's keys: itself, or a bare metric name with its one filter."""
    if spec in have:
        return spec
    if "," in spec:
        return None
    named = [k for k in have if k.partition(",")[0] == spec]
    if len(named) > 1:
        raise ConfigError(f"--metric {spec}: task {task!r} has it under several filters "
                          f"({', '.join(named)}); give the full key")  # fmt: skip
    return named[0] if named else None


def _choose(
    matched: Sequence[EvalResults], selection: LmmsEvalScores, warnings: list[str]
) -> dict[str, dict[str, str]]:
    """Task -> its metric key and how it was chosen: the tasks asked for (else every task
    found), each with the metric asked for (else its first, in its newest file)."""
    present = list(dict.fromkeys(t for r in matched for t in sorted(r.tasks())))
    if not present:
        raise DataError(f"the {len(matched)} results file(s) matched hold no task with a "
                        "numeric metric")  # fmt: skip
    missing = [t for t in selection.named_tasks() if t not in present]
    if missing:
        raise DataError(f"task(s) {', '.join(missing)} not in the results of the checkpoints "
                        f"(found: {', '.join(sorted(present))})")  # fmt: skip
    chosen: dict[str, dict[str, str]] = {}
    for task in list(dict.fromkeys(selection.task)) or sorted(present):
        holders = _newest_first([r for r in matched if task in r.tasks()])
        spec = selection.metric_for(task)
        if spec is None:
            key, why = holders[0].primary(task), "the task's first metric"
        else:
            have = list(dict.fromkeys(k for r in holders for k in r.metrics(task)))
            key, why = _metric_key(spec, task, have), "--metric"
            if key is None and task in selection.named_tasks():
                raise DataError(f"task {task!r} has no metric {spec!r} (has: {', '.join(have)})")
            if key is None:
                warnings.append(f"task {task!r} has no metric {spec!r}; left out")
                continue
        chosen[task] = {"metric": key, "chosen_by": why}
        if any(r.lower_is_better(task, key) for r in holders):
            warnings.append(f"task {task!r}: lmms-eval records {key} as lower-is-better, so a "
                            "measure that predicts it correlates positively")  # fmt: skip
    if not chosen:
        raise DataError(f"no task of the results has metric {selection.metric_for('')!r} "
                        f"(tasks: {', '.join(sorted(present))})")  # fmt: skip
    return chosen


def _pick(
    found: Sequence[EvalResults], owner: dict[int, str], order: list[str],
    chosen: dict[str, dict[str, str]], warnings: list[str],
) -> tuple[list[Checkpoint], list[str]]:  # fmt: skip
    """One Checkpoint per (task, checkpoint in `order`) from the newest file that holds the
    task; the files used."""
    checkpoints, used = [], []
    for task, how in chosen.items():
        for model in order:
            mine = _newest_first([found[i] for i, m in owner.items()
                                  if m == model and task in found[i].tasks()])  # fmt: skip
            if not mine:
                warnings.append(f"checkpoint {model}: no result for task {task!r}; left out of it")
                continue
            newest = mine[0]
            if len(mine) > 1:
                older = ", ".join(str(r.path) for r in mine[1:])
                warnings.append(f"checkpoint {model}, task {task!r}: {len(mine)} results files; "
                                f"the newest, {newest.path}, is used (not {older})")  # fmt: skip
            score = newest.score(task, how["metric"])
            scored = {"file": str(newest.path), "model": newest.model, "metric": how["metric"]}
            checkpoints.append(Checkpoint(model, score, task, scored=scored))
            used.append(str(newest.path))
    return checkpoints, list(dict.fromkeys(used))


def lmms_eval_scores(
    found: Sequence[EvalResults], selection: LmmsEvalScores, models: Sequence[str] = ()
) -> LmmsScoreTable:
    """Match every results file to a checkpoint (`models`, or where none are given, the
    models the files scored, or the pre-trained model each was fine-tuned from), choose tasks
    and metrics, and return one Checkpoint per (checkpoint, task); DataError when nothing
    matches, a task or metric asked for is not there, or fewer than 3 checkpoints are scored.
    Several files for one checkpoint and task: the newest (by lmms-eval's file-name time
    stamp) is used, with a warning."""
    warnings: list[str] = []
    owner = _match(found, models, warnings)
    chosen = _choose([found[i] for i in owner], selection, warnings)
    named = list(dict.fromkeys(owner.values()))
    order = [m for m in dict.fromkeys(models) if m in named] or named
    checkpoints, used = _pick(found, owner, order, chosen, warnings)
    scored = list(dict.fromkeys(c.model for c in checkpoints))
    for model in dict.fromkeys(models):
        if model not in scored:
            warnings.append(f"checkpoint {model}: no lmms-eval result scored it (or a model "
                            "fine-tuned from it); left out")  # fmt: skip
    if len(scored) < 3:
        raise DataError(f"{len(scored)} checkpoint(s) with lmms-eval scores; a correlation needs "
                        "at least 3")  # fmt: skip
    return LmmsScoreTable(checkpoints, chosen, used, warnings)
