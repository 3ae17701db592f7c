"""`modalign mir --model ...`: load an LVLM, draw seeded image/text pairs, stream them into MIR.

    modalign mir --model PATH_OR_ID --images DIR --texts FILE [--n 100] [--seed 0]
                 [--batch-size 8] [--template chat|plain|official] [--json OUT.json] [--plot OUT.png]

Under `torchrun` every rank scores a strided shard and the sums are all-reduced; rank 0 prints
and writes (`torchrun --nproc_per_node 2 $(which modalign) mir --model ... --num-samples 100`;
torchrun's own parser mistakes `--n` for an abbreviation of its flags). Output paths are checked
before any work and written only after the whole computation succeeded (atomically).
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path
from typing import Any

from modalign.cli.outputs import check_outputs, print_baselines, print_summary, resolve_settings
from modalign.cli.probe_options import (
    add_data_arguments,
    add_run_arguments,
    check_run_arguments,
    parse_layers,
    source_from_args,
    use_default_data,
)
from modalign.errors import ConfigError, DataError


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the model/data/run options of `modalign mir --model` to `parser`."""
    parser.add_argument("--model", help="Hugging Face model id or local checkpoint directory")
    add_data_arguments(parser)
    add_run_arguments(parser)
    g = parser.add_argument_group("model run")
    g.add_argument(
        "--repeats", type=int, default=1, help="MIR on R seeded subsets of N: mean, range"
    )
    g.add_argument("--dry-run", action="store_true", help="print one tokenized sample and stop")
    g.add_argument("--plot", type=Path, help="write the per-layer gap plot (PNG)")


def _versions() -> dict[str, str]:
    import torch
    import transformers

    from modalign import __version__

    return {"modalign": __version__, "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version()}  # fmt: skip


def _apply_default(args: argparse.Namespace) -> None:
    """No --model: score the embedded default model (on its own held-out set unless data given)."""
    if args.model:
        return
    from modalign.assets import default_model_path

    try:
        args.model = str(default_model_path())
    except DataError as exc:
        raise ConfigError(f"no --model given and {exc}") from exc
    use_default_data(args)


def _check_args(args: argparse.Namespace) -> None:
    _apply_default(args)
    check_run_arguments(args)
    if args.repeats < 1:
        raise ConfigError("--repeats must be >= 1")


def _record(result: Any, args: argparse.Namespace, adapter: Any, source: Any, pairs: Any) -> None:
    """What a reader needs to reproduce the run: run settings (once, in `settings`), and the
    model, data, samples and versions in `metadata`."""
    from modalign.data import sample_ids

    result.settings.update(
        {
            "n": args.n,
            "seed": args.seed,
            "repeats": args.repeats,
            "compat": args.compat,
            "device": str(adapter.device),
            "dtype": str(adapter.dtype).replace("torch.", ""),
        }
    )
    result.metadata.update(
        {
            "model": args.model,
            "model_type": adapter.model.config.model_type,
            "samples": sample_ids(pairs),
            "data": dict(source.description),
            "versions": _versions(),
        }
    )


def run_model(args: argparse.Namespace) -> int:
    """Run `modalign mir --model ...`; returns the exit status (user errors raise ModalignError)."""
    from modalign.data import sample_ids
    from modalign.measure.run import (
        RunOptions,
        distributed_context,
        init_distributed_from_env,
        run_mir,
        run_repeats,
    )
    from modalign.models import load_adapter

    _check_args(args)
    check_outputs(args, "json", "plot")
    sqrt, outliers = resolve_settings(args)
    template = args.template or ("official" if args.compat == "official" else "chat")
    layers = parse_layers(args.layers)
    started_group = init_distributed_from_env()
    try:
        rank, world = distributed_context()
        source = source_from_args(args)
        device = args.device
        if device is None and world > 1:
            import torch

            device = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
        adapter = load_adapter(args.model, device=device, dtype=args.dtype)
        quiet = getattr(args, "quiet", False)
        opts = RunOptions(
            batch_size=args.batch_size,
            template=template,
            max_text_tokens=args.max_text_tokens,
            layers=layers,
            sqrt=sqrt,
            outliers=outliers,
            median=args.median,
            progress=rank == 0 and not quiet,
        )
        if args.dry_run:
            pairs = source.sample(args.n, args.seed, lazy=True)
            batch = adapter.prepare(
                [pairs[0]], template=template, max_text_tokens=args.max_text_tokens
            )
            if rank == 0:
                print(adapter.describe(batch, 0))
                print(f"(dry run: {len(pairs)} pairs selected, layers {adapter.layer_ids(layers)}, "
                      f"sqrt={sqrt}, outliers={outliers}; nothing computed or written)")  # fmt: skip
            return 0
        if args.repeats > 1:
            summary = run_repeats(
                adapter, lambda n, s: source.sample(n, s, lazy=True), args.n, args.repeats,
                args.seed, opts,
            )  # fmt: skip
            result = summary.results[0]
            pairs = source.sample(args.n, args.seed, lazy=True)
            info = summary.as_dict()
            info["samples"] = [
                sample_ids(source.sample(args.n, s, lazy=True)) for s in summary.seeds
            ]
            result.metadata["repeats"] = info
        else:
            pairs = source.sample(args.n, args.seed, lazy=True)
            sampler = None
            if getattr(args, "baselines", False):
                from modalign.metrics.baseline_sampler import BaselineSampler

                sampler = BaselineSampler(len(adapter.layer_ids(layers)), seed=args.seed)
            result = run_mir(adapter, pairs, opts, baselines=sampler)
        _record(result, args, adapter, source, pairs)
        if rank != 0:
            return 0
        if args.plot:
            from modalign.report import plot_layers

            plot_layers([result], [Path(str(args.model)).name or str(args.model)], args.plot)
        if args.json:
            result.to_json(args.json)
        print_summary(result, quiet)
        if "baselines" in result.metadata and not quiet:
            print_baselines(result.metadata["baselines"])
        if args.repeats > 1:
            r = result.metadata["repeats"]
            print(f"MIR over {r['repeats']} subsets of {r['n']}: mean {r['mean']:.4f} "
                  f"(range {r['min']:.4f} .. {r['max']:.4f}, std {r['std']:.4f})")  # fmt: skip
        if result.metadata.get("truncated_passages"):
            print(f"note: {result.metadata['truncated_passages']} passage(s) truncated to "
                  f"{args.max_text_tokens} tokens", file=sys.stderr)  # fmt: skip
        for path in (args.plot, args.json):
            if path and not quiet:
                print(f"wrote {path}", file=sys.stderr)
        return 0
    finally:
        if started_group:
            import torch.distributed as dist

            dist.destroy_process_group()
