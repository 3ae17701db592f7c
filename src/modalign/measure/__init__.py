"""Measuring a model: pairs -> adapter forward passes -> MIR accumulators -> `MIRResult`, on one
process or sharded across many."""

from modalign.measure.run import (
    RepeatSummary,
    RunOptions,
    distributed_context,
    init_distributed_from_env,
    locate_nonfinite,
    run_mir,
    run_repeats,
    shard,
)

__all__ = [
    "RepeatSummary",
    "RunOptions",
    "distributed_context",
    "init_distributed_from_env",
    "locate_nonfinite",
    "run_mir",
    "run_repeats",
    "shard",
]
