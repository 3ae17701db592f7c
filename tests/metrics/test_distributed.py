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


def _data(mode_spikes: int):
    g = torch.Generator().manual_seed(11)
    vision = [torch.randn(300, 8, generator=g, dtype=torch.float64) * (1 + i) + 1 for i in range(2)]
    text = [torch.randn(120, 8, generator=g, dtype=torch.float64) * 2 for _ in range(2)]
    for v in vision:
        v[:mode_spikes] *= 50
    return vision, text


def _worker(rank: int, world: int, init: str, out: str, mode: str, tail: int, spikes: int) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        vision, text = _data(spikes)
        # uneven strided shards, as a distributed sampler without padding duplicates gives
        shard = lambda xs: [x[rank::world] for x in xs]  # noqa: E731
        acc = MIRAccumulator(2, outliers=mode, tail_capacity=tail)
        acc.update(shard(vision), shard(text))
        acc.all_reduce()
        second = acc.needs_second_pass
        if second:
            acc.begin_second_pass()
            acc.update(shard(vision), shard(text))
            acc.all_reduce()
        res = acc.compute()
        with open(f"{out}.{rank}", "w") as fh:
            json.dump(
                {
                    "mir": res.mir,
                    "per_layer": res.per_layer,
                    "second": second,
                    "n_vision": res.n_vision,
                },
                fh,
            )
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
@pytest.mark.skipif(sys.platform == "win32", reason="gloo file init on POSIX only")
@pytest.mark.parametrize(
    ("mode", "tail", "spikes"),
    [("drop", 512, 3), ("drop", 2, 12), ("median", 512, 3), ("none", 512, 3)],
)
def test_two_process_reduction_equals_single_process(tmp_path, mode, tail, spikes):
    init = f"file://{tmp_path / 'rendezvous'}"
    out = str(tmp_path / "res")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(2, init, out, mode, tail, spikes), nprocs=2, join=True)
    vision, text = _data(spikes)
    ref = compute_mir(vision, text, outliers=mode)
    results = [json.loads(Path(f"{out}.{r}").read_text()) for r in range(2)]
    for r in results:
        assert r["mir"] == pytest.approx(ref.mir, rel=1e-10)
        assert r["n_vision"] == ref.n_vision
        assert r["second"] == (tail == 2)
