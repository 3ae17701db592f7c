"""`modalign mir compare a.json b.json ...`: overlay several MIR runs in one table and plot."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `modalign mir compare` (standalone; dispatched by `mir`)."""
    parser = argparse.ArgumentParser(
        prog="modalign mir compare",
        description="Compare MIR results (JSON files written by `modalign mir --json`).",
        epilog="Put --labels after the result files: it takes every word that follows it.",
    )
    parser.add_argument("results", nargs="+", metavar="RESULT.json", help="result files")
    parser.add_argument("--labels", nargs="+", metavar="LABEL", help="one label per result file")
    parser.add_argument("--plot", metavar="OUT.png", help="write the per-layer gap plot here")
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument(
        "--log", dest="log_scale", action="store_const", const=True, help="log-scale y axis"
    )
    scale.add_argument(
        "--linear", dest="log_scale", action="store_const", const=False, help="linear y axis"
    )
    # default (neither): log when the per-layer distances span more than 100x
    parser.add_argument("--title", help="plot title")
    return parser


def run_compare(argv: Sequence[str]) -> int:
    """Parse argv, print the comparison table, optionally write the plot; 0 ok, 2 on bad input."""
    from modalign.report import as_run, compare_table, plot_layers  # lazy: matplotlib on use

    parser = build_parser()
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exc:  # argparse exits on --help (0) and on usage errors (2)
        return int(exc.code or 0)
    try:
        runs = [as_run(path) for path in args.results]
        print(compare_table(runs, args.labels))
        if args.plot:
            path = plot_layers(
                runs, args.labels, args.plot, log_scale=args.log_scale, title=args.title
            )
            print(f"\nplot written to {path}")
    except (ValueError, OSError) as exc:
        print(f"modalign mir compare: error: {exc}", file=sys.stderr)
        return 2
    return 0
