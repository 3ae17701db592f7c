"""`modalign mir compare a.json b.json ...`: overlay several MIR runs in one table and plot."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of `modalign mir compare` to its sub-parser."""
    parser.description = "Compare MIR results (JSON files written by `modalign mir --json`)."
    parser.epilog = "Put --labels after the result files: it takes every word that follows it."
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
    parser.add_argument("--allow-mismatch", action="store_true",
                        help="compare runs over other layers or measured with other settings "
                        "(refused by default; the table says how they differ)")  # fmt: skip
    parser.set_defaults(func=run_compare)


def run_compare(args: argparse.Namespace) -> int:
    """Print the comparison table and optionally write the plot."""
    from modalign.cli.outputs import check_outputs
    from modalign.metrics import MIRResult
    from modalign.report import check_labels, compare_table, plot_layers  # matplotlib on use

    check_outputs(args, "plot", reads=args.results)
    runs = [MIRResult.load(path) for path in args.results]
    labels = check_labels(runs, args.labels, sources=args.results)
    print(compare_table(runs, labels, allow_mismatch=args.allow_mismatch))
    if args.plot:
        path = plot_layers(runs, labels, args.plot, log_scale=args.log_scale, title=args.title)
        print(f"\nplot written to {path}")
    return 0
