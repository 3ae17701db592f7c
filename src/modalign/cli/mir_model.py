"""`modalign mir --model ...`: load an LVLM, draw seeded image/text pairs, stream them into MIR.

    modalign mir --model PATH_OR_ID --images DIR --texts FILE [--n 100] [--seed 0]
                 [--batch-size 8] [--template chat|plain|official] [--json OUT.json] [--plot OUT.png]

Without --model it scores the shipped demo model (`modalign.assets`), on its held-out eval set
unless data is given, and says so. The settings are read and resolved once (`ModelRun`), before
any work. Under `torchrun` every rank scores a strided shard and the sums are all-reduced; rank 0
prints and writes (`torchrun --nproc_per_node 2 $(which modalign) mir --model ... --num-samples
100`; torchrun's own parser mistakes `--n` for an abbreviation of its flags). Output paths are
checked before any work and written only after the whole computation succeeded (atomically).
"""

from __future__ import annotations

import argparse
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modalign.cli.outputs import (
    check_outputs,
    print_baseline_spread,
    print_baselines,
    print_summary,
    read_sections,
)
from modalign.cli.probe_options import Probe, resolve_probe
from modalign.measure.reference import ReferenceSettings
from modalign.measure.settings import MIRSettings


@dataclass(frozen=True)
class ModelRun:
    """A `modalign mir --model` run, resolved: what it scores and how."""

    probe: Probe
    settings: MIRSettings
    reference: ReferenceSettings


def resolve_run(args: argparse.Namespace) -> ModelRun:
    """The run the flags and `--config` describe, the demo filled in where it stands in."""
    sections = read_sections(args)
    probe = resolve_probe(sections["subject"].model, sections["data"], demo_model=True)
    return ModelRun(probe, sections["mir"], sections["reference"])


def _versions() -> dict[str, str]:
    import torch
    import transformers

    from modalign import __version__

    return {"modalign": __version__, "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version()}  # fmt: skip


def _provenance(result: Any, model: str, adapter: Any, source: Any, pairs: Any) -> None:
    """What a reader needs to reproduce the run beside its settings (written by `run_mir`):
    the model, data, samples and versions, in `metadata`."""
    from modalign.data import sample_ids

    result.metadata.update(
        {
            "model": model,
            "model_type": adapter.model.config.model_type,
            "samples": sample_ids(pairs),
            "data": dict(source.description),
            "versions": _versions(),
        }
    )


def run_model(args: argparse.Namespace) -> int:
    """Run `modalign mir --model ...`; returns the exit status (user errors raise ModalignError)."""
    import dataclasses

    from modalign.data import sample_ids
    from modalign.measure.run import (
        distributed_context,
        init_distributed_from_env,
        run_mir,
        run_repeats,
    )
    from modalign.models import load_adapter

    plan = resolve_run(args)
    check_outputs(args, "json", "plot", reads=[*plan.probe.data.reads(), plan.probe.model])
    model, settings = plan.probe.model, plan.settings
    started_group = init_distributed_from_env()
    try:
        rank, world = distributed_context()
        source = plan.probe.data.source()
        device = settings.device
        if device is None and world > 1:
            import torch

            device = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
        adapter = load_adapter(model, device=device, dtype=settings.dtype)
        settings = dataclasses.replace(settings, progress=rank == 0 and not args.quiet)
        draw = lambda n, seed: source.sample(n, seed, lazy=True)  # noqa: E731
        pairs = draw(settings.n, settings.seed)
        if args.dry_run:
            batch = adapter.prepare(
                [pairs[0]], template=settings.template, max_text_tokens=settings.max_text_tokens
            )
            if rank == 0:
                print(adapter.describe(batch, 0))
                print(f"(dry run: {len(pairs)} pairs selected, layers "
                      f"{adapter.layer_ids(settings.layers)}, sqrt={settings.sqrt}, "
                      f"outliers={settings.outliers}; nothing computed or written)")  # fmt: skip
            return 0
        if settings.repeats > 1:
            summary = run_repeats(adapter, draw, settings)
            result = summary.results[0]
            info = summary.as_dict()
            info["samples"] = [sample_ids(draw(settings.n, s)) for s in summary.seeds]
            result.metadata["repeats"] = info
        else:
            result = run_mir(adapter, pairs, settings)
        _provenance(result, model, adapter, source, pairs)
        if plan.reference.reference == "fresh":
            from modalign.measure import fresh_connector_reference

            quiet = dataclasses.replace(settings, progress=False)
            result.metadata["reference"] = fresh_connector_reference(
                adapter, pairs, quiet, range(plan.reference.reference_seeds)
            )
        if rank != 0:
            return 0
        _report(result, args, plan)
        return 0
    finally:
        if started_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def _report(result: Any, args: argparse.Namespace, plan: ModelRun) -> None:
    """Write the plot and JSON, print the summary (and what stands in for what was not given)."""
    if args.plot:
        from modalign.report import plot_layers

        model = plan.probe.model
        plot_layers([result], [Path(str(model)).name or str(model)], args.plot)
    if args.json:
        result.to_json(args.json)
    if plan.probe.note and not args.quiet:
        print(plan.probe.note)
    print_summary(result, args.quiet)
    if "baselines" in result.metadata and not args.quiet:
        print_baselines(result.metadata["baselines"])
    ref = result.metadata.get("reference")
    if ref and not args.quiet:
        gap = ref["mean"] - result.mir
        verdict = f"{gap:.4f} better aligned" if gap >= 0 else f"{-gap:.4f} less aligned"
        print(f"reference: the same model with a fresh connector ({len(ref['seeds'])} seeds): "
              f"MIR {ref['mean']:.4f} (range {ref['min']:.4f} .. {ref['max']:.4f}); this model "
              f"is {verdict} (lower is better)")  # fmt: skip
    repeats = result.metadata.get("repeats")
    if repeats:
        print(f"MIR over {repeats['repeats']} subsets of {repeats['n']}: mean {repeats['mean']:.4f} "
              f"(range {repeats['min']:.4f} .. {repeats['max']:.4f}, std {repeats['std']:.4f})")  # fmt: skip
        if "baselines" in repeats and not args.quiet:
            print_baseline_spread(repeats["baselines"], repeats["repeats"])
    if result.metadata.get("truncated_passages"):
        limit = plan.settings.max_text_tokens
        where = f"{limit} tokens" if limit else "fit the model's context window"
        print(f"note: {result.metadata['truncated_passages']} passage(s) truncated to {where}",
              file=sys.stderr)  # fmt: skip
    for path in (args.plot, args.json):
        if path and not args.quiet:
            print(f"wrote {path}", file=sys.stderr)
