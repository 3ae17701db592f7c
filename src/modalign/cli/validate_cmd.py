"""`modalign validate`: does MIR (or a baseline, or the caption loss) of pre-trained checkpoints
predict the scores they reached after fine-tuning?

    modalign validate --checkpoints runs.jsonl --out runs/validate          # {"model","score","group"}
    modalign validate --model ckA --score 61.2 --model ckB --score 58.9 --model ckC --score 63.0 \\
                      --images probe/ --texts captions.txt --out runs/validate

Writes OUT/validate.json (every measure of every checkpoint, the correlations with bootstrap
intervals), OUT/validate.md (tables) and OUT/validate.png (score vs each measure). Each
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


SECTIONS = {"validate": ValidateSettings, "run": ValidateRun, "data": ProbeData}


def configure(p: argparse.ArgumentParser) -> None:
    """Add the arguments of `modalign validate` to `p`."""
    p.description = __doc__.split("\n\n")[0]
    g = p.add_argument_group("checkpoints and scores")
    g.add_argument("--checkpoints", type=Path,
                   help='JSONL, one {"model": DIR_OR_ID, "score": X, "group": G (optional)} '
                   "per line; relative model paths are read from the file's folder")  # fmt: skip
    g.add_argument("--model", action="append", default=[], help="a checkpoint (repeatable)")
    g.add_argument("--score", action="append", type=float, default=[],
                   help="its score after fine-tuning, higher is better (one per --model)")  # fmt: skip
    g.add_argument("--group", action="append", default=[],
                   help="its group, e.g. the benchmark (one per --model, or none)")  # fmt: skip
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--cache", type=Path, help="measurement cache folder (default: OUT/cache)")
    add_config_option(p)
    add_data_options(p)
    add_options(p.add_argument_group("probe draw"), ValidateRun, path="run", only=("n",))
    add_options(p.add_argument_group("measures"), ValidateSettings, path="validate")
    add_options(p.add_argument_group("statistics"), ValidateRun, path="run", skip=("n",))
    p.set_defaults(func=run)


def _checkpoints(args: argparse.Namespace) -> list:
    from modalign.evidence.checkpoints import checkpoints_from_lists, read_checkpoints

    if args.checkpoints and args.model:
        raise ConfigError("give --checkpoints FILE or --model/--score flags, not both")
    if args.checkpoints:
        return read_checkpoints(args.checkpoints)
    if not args.model:
        raise ConfigError("no checkpoints: give --checkpoints FILE or --model/--score flags")
    return checkpoints_from_lists(args.model, args.score, args.group or None)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from modalign.atomic import (
        atomic_write_json,
        atomic_write_text,
        check_not_an_input,
        check_writable,
    )
    from modalign.evidence.report import plot_scatter, render_markdown
    from modalign.evidence.validate import usable, validate

    config = read_config(args, SECTIONS)
    settings = settings_from(ValidateSettings, args, "validate", config=config["validate"])
    settings = replace(settings, progress=sys.stderr.isatty())
    runs = settings_from(ValidateRun, args, "run", config=config["run"])
    settings.mir_settings(runs.n).resolve()  # refuse bad combinations before any work
    probe = resolve_probe(
        None, settings_from(ProbeData, args, "data", config=config["data"]), demo_model=False
    )
    checkpoints = _checkpoints(args)
    scores = {ck.score for ck in checkpoints}
    if len(scores) == 1:
        raise DataError(f"every checkpoint's score is {scores.pop()}: a correlation with constant "
                        "scores is undefined (nothing measured or written)")  # fmt: skip
    reads = [args.checkpoints, *probe.data.reads(), *(ck.model for ck in checkpoints),
             getattr(args, "config", None)]  # fmt: skip
    check_not_an_input(args.out, "--out", reads, folder=True)
    for name in ("validate.json", "validate.md", "validate.png"):
        check_writable(args.out / name, "--out")
    if probe.note:
        print(probe.note, file=sys.stderr)
    pairs = probe.data.source().sample(runs.n, settings.seed, lazy=True)
    report = validate(
        checkpoints, pairs, settings, args.cache or args.out / "cache",
        resamples=runs.bootstrap, level=runs.level,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )  # fmt: skip
    if not usable(report):  # a correct report or one line (with its reasons), nothing written
        reasons = "; ".join(report["warnings"]) or "no measured checkpoint"
        raise DataError(
            f"no correlation could be computed ({reasons}); the measurements are kept in "
            f"{args.cache or args.out / 'cache'}"
        )
    atomic_write_json(args.out / "validate.json", report)
    text = render_markdown(report)
    atomic_write_text(args.out / "validate.md", text)
    if any("measures" in r for r in report["checkpoints"]):
        plot_scatter(report, args.out / "validate.png")
    print(text)
    for path in ("validate.json", "validate.md", "validate.png"):
        if (args.out / path).exists():
            print(f"wrote {args.out / path}", file=sys.stderr)
    return 0
