"""`modalign validate`: does MIR (or a baseline, or the caption loss) of pre-trained checkpoints
predict the scores they reached after fine-tuning?

    modalign validate --checkpoints runs.jsonl --out runs/validate          # {"model","score","group"}
    modalign validate --model ckA --score 61.2 --model ckB --score 58.9 --model ckC --score 63.0 \\
                      --images probe/ --texts captions.txt --out runs/validate
    modalign validate --scores-from lmms_out/ [--task mme] [--metric KEY] [--model ckA ...] \\
                      --images probe/ --texts captions.txt --out runs/validate

Writes OUT/validate.json (every measure of every checkpoint, the correlations with bootstrap
intervals), OUT/validate.md (tables) and OUT/validate-<measure>.png (score against that measure,
a panel per group, points labelled with their checkpoint). Scores come by hand, from a JSONL, or
from lmms-eval's results files (each mapped to its checkpoint by its pretrained= path; one group
per task). A group with fewer than MIN_INTERVAL_N checkpoints is warned about. Each
checkpoint's measurements are cached in OUT/cache (or --cache) under a key of model, probe data
and settings: re-running resumes after the last finished checkpoint and reuses every result
whose inputs did not change. Without probe data, the embedded default's probe set is used.
Settings may come from `--config FILE` (YAML/JSON, keys as the flags' names); flags override it.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from modalign.cli.probe_options import (
    ProbeData,
    add_data_options,
    read_config,
    resolve_probe,
)
from modalign.errors import ConfigError, DataError
from modalign.evidence.lmms_scores import LmmsEvalScores
from modalign.evidence.validate import ValidateSettings
from modalign.measure.settings import MIRSettings
from modalign.settings import add_config_option, add_options, option, option_like, settings_from


@dataclass(frozen=True)
class ValidateRun:
    """What a validation needs beside how each checkpoint is measured: the probe size and the
    bootstrap of the correlations."""

    n: int = option_like(MIRSettings, "n")
    bootstrap: int = option(1000, help="bootstrap resamples")
    level: float = option(0.95, help="interval level")

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError(f"--n must be >= 1, got {self.n}")
        if self.bootstrap < 0 or not 0 < self.level < 1:
            raise ConfigError("--bootstrap must be >= 0 and --level in (0, 1)")


SECTIONS = {
    "validate": ValidateSettings,
    "run": ValidateRun,
    "data": ProbeData,
    "scores": LmmsEvalScores,
}


def configure(p: argparse.ArgumentParser) -> None:
    """Add the arguments of `modalign validate` to `p`."""
    p.description = __doc__.split("\n\n")[0]
    g = p.add_argument_group("checkpoints and scores")
    g.add_argument("--checkpoints", type=Path,
                   help='JSONL, one {"model": DIR_OR_ID, "score": X, "group": G (optional)} '
                   "per line; relative model paths are read from the file's folder")  # fmt: skip
    g.add_argument("--model", action="append", default=[],
                   help="a checkpoint (repeatable); with --scores-from, the checkpoints to "
                   "measure (default: those the results name), without --score")  # fmt: skip
    g.add_argument("--score", action="append", type=float, default=[],
                   help="its score after fine-tuning, higher is better (one per --model)")  # fmt: skip
    g.add_argument("--group", action="append", default=[],
                   help="its group, e.g. the benchmark (one per --model, or none)")  # fmt: skip
    add_options(p.add_argument_group("scores from lmms-eval"), LmmsEvalScores, path="scores")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--cache", type=Path, help="measurement cache folder (default: OUT/cache)")
    add_config_option(p)
    add_data_options(p)
    add_options(p.add_argument_group("probe draw"), ValidateRun, path="run", only=("n",))
    add_options(p.add_argument_group("measures"), ValidateSettings, path="validate")
    add_options(p.add_argument_group("statistics"), ValidateRun, path="run", skip=("n",))
    p.set_defaults(func=run)


def _checkpoints(args: argparse.Namespace, scores: LmmsEvalScores) -> tuple[list, dict | None]:
    """The checkpoints and their scores; with --scores-from also what the results gave
    (the lmms-eval score table, its notes printed now, before anything is measured)."""
    from modalign.evidence.checkpoints import checkpoints_from_lists, read_checkpoints

    if scores.scores_from is not None:
        from modalign.evidence.lmms_results import find_eval_results
        from modalign.evidence.lmms_scores import lmms_eval_scores

        if args.checkpoints or args.score or args.group:
            raise ConfigError("--scores-from gives the scores: no --checkpoints, --score or "
                              "--group with it (--model names the checkpoints to measure)")  # fmt: skip
        found, skipped = find_eval_results(scores.scores_from)
        table = lmms_eval_scores(found, scores, args.model)
        for line in [*skipped, *table.warnings]:
            print(f"warning: {line}", file=sys.stderr)
        return table.checkpoints, {"scores": table.to_dict(), "warnings": table.warnings}
    if args.checkpoints and args.model:
        raise ConfigError("give --checkpoints FILE or --model/--score flags, not both")
    if args.checkpoints:
        return read_checkpoints(args.checkpoints), None
    if not args.model:
        raise ConfigError("no checkpoints: give --checkpoints FILE, --model/--score flags or "
                          "--scores-from lmms-eval results")  # fmt: skip
    return checkpoints_from_lists(args.model, args.score, args.group or None), None


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from modalign.atomic import (
        atomic_write_json,
        atomic_write_text,
        check_not_an_input,
        check_writable,
    )
    from modalign.evidence.measures import MEASURES
    from modalign.evidence.report import plot_measures, render_markdown
    from modalign.evidence.validate import flag_small_n, usable, validate

    config = read_config(args, SECTIONS)
    settings = settings_from(ValidateSettings, args, "validate", config=config["validate"])
    settings = replace(settings, progress=sys.stderr.isatty())
    runs = settings_from(ValidateRun, args, "run", config=config["run"])
    settings.mir_settings(runs.n).resolve()  # refuse bad combinations before any work
    probe = resolve_probe(
        None, settings_from(ProbeData, args, "data", config=config["data"]), demo_model=False
    )
    source = settings_from(LmmsEvalScores, args, "scores", config=config["scores"])
    checkpoints, lmms = _checkpoints(args, source)
    scores = {ck.score for ck in checkpoints}
    if len(scores) == 1:
        raise DataError(f"every checkpoint's score is {scores.pop()}: a correlation with constant "
                        "scores is undefined (nothing measured or written)")  # fmt: skip
    reads = [args.checkpoints, source.scores_from, *probe.data.reads(),
             *(ck.model for ck in checkpoints), getattr(args, "config", None)]  # fmt: skip
    check_not_an_input(args.out, "--out", reads, folder=True)
    for name in ("validate.json", "validate.md", *(f"validate-{m}.png" for m in MEASURES)):
        check_writable(args.out / name, "--out")
    if probe.note:
        print(probe.note, file=sys.stderr)
    pairs = probe.data.source().sample(runs.n, settings.seed, lazy=True)
    report = validate(
        checkpoints, pairs, settings, args.cache or args.out / "cache",
        resamples=runs.bootstrap, level=runs.level, pool=lmms is None,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )  # fmt: skip
    if lmms is not None:  # where the scores came from, and what was left out, first
        report = {**report, "scores": lmms["scores"],
                  "warnings": [*lmms["warnings"], *report["warnings"]]}  # fmt: skip
    flagged = flag_small_n(report)
    for line in flagged["warnings"][len(report["warnings"]) :]:
        print(f"warning: {line}", file=sys.stderr)
    report = flagged
    if not usable(report):  # a correct report or one line (with its reasons), nothing written
        reasons = "; ".join(report["warnings"]) or "no measured checkpoint"
        raise DataError(
            f"no correlation could be computed ({reasons}); the measurements are kept in "
            f"{args.cache or args.out / 'cache'}"
        )
    atomic_write_json(args.out / "validate.json", report)
    text = render_markdown(report)
    atomic_write_text(args.out / "validate.md", text)
    pngs = plot_measures(report, args.out)
    print(text)
    for path in (args.out / "validate.json", args.out / "validate.md", *pngs):
        print(f"wrote {path}", file=sys.stderr)
    return 0
