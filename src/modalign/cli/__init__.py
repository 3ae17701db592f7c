"""Command-line entry point: `modalign <command> ...`.

Each command lives in its own module exposing `register(subparsers)`, which adds its parser and
sets `func`; this file only builds the top-level parser and dispatches.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Sequence

from modalign import __version__

# Command modules, imported lazily so `modalign --help` stays fast.
COMMANDS: dict[str, str] = {
    "mir": "modalign.cli.mir_cmd",
    "lab": "modalign.cli.lab_cmd",
    "assemble": "modalign.cli.assemble_cmd",
}


class CLIError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modalign",
        description="Measure and improve cross-modal alignment in vision-language models.",
    )
    parser.add_argument("--version", action="version", version=f"modalign {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMANDS.values():
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 usage / input error, 1 unexpected)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["mir", "compare"]:  # `modalign mir compare A.json B.json ...`
        from modalign.cli.mir_compare import run_compare

        return _guarded(run_compare, argv[2:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return _guarded(args.func, args)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one readable line (`modalign: warning: ...`) instead of source excerpts."""
    print(f"modalign: warning: {message}", file=file or sys.stderr)


def _guarded(func, arg) -> int:
    """Run a command; user-facing errors become one line on stderr and exit status 2."""
    with warnings.catch_warnings():  # restores the warning machinery on exit
        warnings.showwarning = _show_warning
        try:
            return int(func(arg) or 0)
        except (CLIError, ValueError, FileNotFoundError) as exc:
            print(f"modalign: error: {exc}", file=sys.stderr)
            return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
