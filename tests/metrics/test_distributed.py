"""The all-reduce path on CPU: two gloo processes, each with half the tokens, equal one process."""

import json
import os
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from modalign.metrics import MIRAccumulator, compute_mir
from modalign.metrics import median as median_mod


def _data(spikes: int):
    g = torch.Generator().manual_seed(11)
    vision = [torch.randn(300, 8, generator=g, dtype=torch.float64) * (1 + i) + 1 for i in range(2)]
    text = [torch.randn(120, 8, generator=g, dtype=torch.float64) * 2 for _ in range(2)]
    for v in vision:
        v[:spikes] *= 50
    return vision, text


CASES = {  # name: (outliers, tail capacity, spikes, median sample, bracket z, passes)
    "drop": ("drop", 512, 3, 4096, None, 1),
    "drop, tail overflow": ("drop", 2, 12, 4096, None, 2),
    "median, sample holds every token": ("median", 512, 3, 4096, None, 1),
    "median, exact from the bracket": ("median", 512, 3, 64, None, 2),
    "median, tail overflow, bracket misses": ("median", 2, 12, 64, 0.0, 3),
    "none": ("none", 512, 3, 4096, None, 1),
}


def _run_case(rank: int, world: int, case: tuple) -> dict:
    mode, tail, spikes, sample, z, _ = case
    median_mod.BRACKET_Z = 6.0 if z is None else z
    vision, text = _data(spikes)
    # uneven strided shards, as a distributed sampler without padding duplicates gives
    shard = lambda xs: [x[rank::world] for x in xs]  # noqa: E731
    acc = MIRAccumulator(2, outliers=mode, tail_capacity=tail, median_sample=sample)
    fed = []  # the pass index of every feed

    def feed(a: MIRAccumulator) -> None:
        fed.append(a.pass_index)
        a.update(shard(vision), shard(text))

    res = acc.accumulate(feed, distributed=True)
    # the same passes driven step by step (the protocol accumulate() runs) give the same result
    steps = MIRAccumulator(2, outliers=mode, tail_capacity=tail, median_sample=sample)
    steps.update(shard(vision), shard(text))
    steps.all_reduce()
    while steps.needs_another_pass:
        steps.begin_next_pass()
        steps.update(shard(vision), shard(text))
        steps.all_reduce()
    by_steps = steps.compute()
    medians = [
        s.median_vector().tolist()
        for s in acc.sets["vision"]
        if mode == "median" and s.finalize()[1]
    ]
    return {"mir": res.mir, "passes": acc.passes, "n_vision": res.n_vision, "medians": medians,
            "fed": fed, "recorded_passes": res.settings["passes"], "steps_mir": by_steps.mir,
            "steps_passes": steps.passes}  # fmt: skip


def _worker(rank: int, world: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        results = {name: _run_case(rank, world, case) for name, case in CASES.items()}
        Path(f"{out}.{rank}").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
@pytest.mark.skipif(sys.platform == "win32", reason="gloo file init on POSIX only")
def test_two_process_reduction_equals_single_process(tmp_path):
    """Every pass (tail-overflow filter, exact-median bracket, bracket-miss fallback) reduces
    to the single-process result; both ranks agree and take the same number of passes, and
    `accumulate(distributed=True)` equals the passes driven step by step."""
    init = f"file://{tmp_path / 'rendezvous'}"
    out = str(tmp_path / "res")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(2, init, out), nprocs=2, join=True)
    results = [json.loads(Path(f"{out}.{r}").read_text()) for r in range(2)]
    for name, (mode, _, spikes, _, _, passes) in CASES.items():
        vision, text = _data(spikes)
        ref = compute_mir(vision, text, outliers=mode)  # one process, every token in the sample
        exact = [v.sort(dim=0).values[(v.shape[0] - 1) // 2] for v in vision]
        for r in results:
            got = r[name]
            assert got["mir"] == pytest.approx(ref.mir, rel=1e-10), name
            assert got["n_vision"] == ref.n_vision, name
            assert got["passes"] == passes, name
            assert got["fed"] == list(range(passes)) and got["recorded_passes"] == passes, name
            assert got["steps_mir"] == got["mir"] and got["steps_passes"] == passes, name
            if mode == "median":
                medians = [torch.tensor(m, dtype=torch.float64) for m in got["medians"]]
                assert len(medians) == 2 and all(map(torch.equal, medians, exact)), name
