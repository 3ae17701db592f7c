"""Command-line entry point: `modalign <command> ...`.

Commands are registered here by name, help line and module; a command's module (which may import
torch, transformers...) is imported only when that command runs, so `modalign --help` stays fast.
Each command module exposes `configure(parser)`, which adds its arguments and sets `func`.
Other distributions add commands through the `modalign.commands` entry-point group, each naming
a `Command` in a light module (the miniature world registers `modalign lab` this way).

Error contract: a `ModalignError` (bad input, unsupported model, bad option) or an OS error
(missing path, permission) is printed as one line and exits with status 2, having written
nothing; anything else is a bug and keeps its traceback (exit status 1).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from modalign import __version__
from modalign.cli.recipe_options import (
    RECIPE,
    add_config_option,
    add_recipe_options,
    read_config,
    recipe_from_options,
)
from modalign.errors import ModalignError
from modalign.registry import Registry

__all__ = [
    "COMMANDS",
    "RECIPE",
    "Command",
    "add_config_option",
    "add_recipe_options",
    "commands",
    "main",
    "read_config",
    "recipe_from_options",
    "run_guarded",
]


@dataclass(frozen=True)
class Command:
    """A sub-command: the module that configures and runs it, and its one-line help."""

    module: str
    help: str


COMMANDS: Registry[Command] = Registry("command")
COMMANDS.register("mir")(
    Command("modalign.cli.mir_cmd", "compute the Modality Integration Rate (or compare runs)")
)
COMMANDS.register("train")(
    Command("modalign.cli.train_cmd", "pre-train or fine-tune an LVLM with alignment methods")
)
COMMANDS.register("sea-labels")(
    Command("modalign.cli.sea_labels_cmd", "SEA word labels for image patches from a CLIP pair")
)
COMMANDS.register("recall")(
    Command(
        "modalign.cli.recall_cmd", "the words an LVLM's image tokens are nearest to (SEA Fig. 1)"
    )
)
COMMANDS.register("validate")(
    Command(
        "modalign.cli.validate_cmd",
        "does MIR of pre-trained checkpoints predict their post-fine-tuning scores?",
    )
)
COMMANDS.register("export")(
    Command(
        "modalign.cli.export_cmd",
        "write a checkpoint as plain llava or transformers custom code (loads without modalign)",
    )
)
COMMANDS.register("assemble")(
    Command(
        "modalign.cli.assemble_cmd",
        "build an HF LLaVA model from an LLM, a CLIP vision tower and mm_projector weights",
    )
)


PLUGIN_GROUP = "modalign.commands"


def commands() -> dict[str, Command]:
    """Every command: the built-in ones, then those other installed distributions register."""
    from importlib.metadata import entry_points

    found = {name: COMMANDS[name] for name in COMMANDS}
    for ep in entry_points(group=PLUGIN_GROUP):
        if ep.name in found:
            continue
        try:
            command = ep.load()
        except Exception as exc:  # a broken plugin must not take the CLI down
            warnings.warn(
                f"command {ep.name!r} ({ep.value}) could not be loaded: {exc}", stacklevel=2
            )
            continue
        if isinstance(command, Command):
            found[ep.name] = command
    return found


def _selected(argv: Sequence[str], known: dict[str, Command]) -> str | None:
    """The command named in argv (its first positional word), if it is a known one."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in known else None
    return None


def build_parser(
    command: str | None = None, known: dict[str, Command] | None = None
) -> argparse.ArgumentParser:
    """The top-level parser; only `command` (if given) gets its full arguments (imports its module)."""
    known = commands() if known is None else known
    parser = argparse.ArgumentParser(
        prog="modalign",
        description="Measure and improve cross-modal alignment in vision-language models.",
    )
    parser.add_argument("--version", action="version", version=f"modalign {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, entry in known.items():
        p = sub.add_parser(name, help=entry.help, description=entry.help)
        if name == command:
            importlib.import_module(entry.module).configure(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 user/usage error, 1 unexpected failure)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    known = commands()
    parser = build_parser(_selected(argv, known), known)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help/--version exit 0, usage errors exit 2
        return int(exc.code or 0)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return run_guarded(args.func, args)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one readable line (`modalign: warning: ...`) instead of source excerpts."""
    print(f"modalign: warning: {message}", file=file or sys.stderr)


def _os_message(exc: OSError) -> str:
    """'permission denied: /path' style text for an OS error."""
    reason = (exc.strerror or str(exc)).lower()
    where = exc.filename if exc.filename is not None else ""
    return f"{reason}: {where}" if where else reason


def run_guarded(func: Callable[[Any], int | None], arg: Any) -> int:
    """Run a command; user errors become one line on stderr and exit status 2."""
    with warnings.catch_warnings():  # restores the warning machinery on exit
        warnings.showwarning = _show_warning
        try:
            return int(func(arg) or 0)
        except ModalignError as exc:
            print(f"modalign: error: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            print(f"modalign: error: {_os_message(exc)}", file=sys.stderr)
            return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
