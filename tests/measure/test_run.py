"""The runner: sharded all-reduce (2 gloo processes) equals one process, second pass, repeats."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import random
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from modalign.measure import MIRSettings
from modalign.measure import run as runner
from modalign.measure.run import RunOptions, run_mir, run_repeats, shard
from modalign.metrics import MIRAccumulator
from modalign.models import load_adapter
from modalign.testing.tiny_vlms import build_tiny
from tests.models.conftest import make_pairs


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory):
    return build_tiny("llava_next", tmp_path_factory.mktemp("runner") / "llava_next")


def _worker(rank: int, world: int, init: str, model_dir: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        adapter = load_adapter(model_dir, device="cpu")
        res = run_mir(adapter, make_pairs(7), RunOptions(batch_size=2, progress=False))
        with open(f"{out}.{rank}", "w") as fh:
            json.dump(res.to_dict(), fh)
    finally:
        dist.destroy_process_group()


def test_shards_cover_every_sample_once():
    items = list(range(11))
    parts = [shard(items, r, 3) for r in range(3)]
    assert sorted(x for p in parts for x in p) == items


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
@pytest.mark.skipif(sys.platform == "win32", reason="gloo file init on POSIX only")
def test_two_gloo_processes_equal_one_process(tmp_path, llava_dir):
    init = f"file://{tmp_path / 'rendezvous'}"
    out = str(tmp_path / "res")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(2, init, str(llava_dir), out), nprocs=2, join=True)
    ref = run_mir(load_adapter(str(llava_dir), device="cpu"), make_pairs(7),
                  RunOptions(batch_size=3, progress=False))  # fmt: skip
    for rank in range(2):
        got = json.loads(Path(f"{out}.{rank}").read_text())
        assert got["mir"] == pytest.approx(ref.mir, abs=1e-6)
        assert got["n_vision"] == ref.n_vision  # no sample lost or duplicated
        assert got["n_text"] == ref.n_text
        assert got["metadata"]["world_size"] == 2
        assert got["metadata"]["n_samples"] == 7


def test_second_pass_matches_one_pass(llava_dir, monkeypatch):
    adapter = load_adapter(str(llava_dir), device="cpu")
    pairs = make_pairs(6)
    ref = run_mir(adapter, pairs, RunOptions(batch_size=3, progress=False))
    assert max(ref.outliers_vision) >= 2  # enough outliers to overflow a 1-row tail cache
    calls = []
    tiny_tail = functools.partial(MIRAccumulator, tail_capacity=1)

    def spy(*args, **kwargs):
        acc = tiny_tail(*args, **kwargs)
        calls.append(acc)
        return acc

    monkeypatch.setattr(runner, "MIRAccumulator", spy)
    two = run_mir(adapter, pairs, RunOptions(batch_size=3, progress=False))
    assert any(a.in_second_pass for sets in calls[0].sets.values() for a in sets)
    assert two.mir == pytest.approx(ref.mir, abs=1e-9)
    assert two.outliers_vision == ref.outliers_vision


def test_repeats_report_mean_and_range(llava_dir):
    adapter = load_adapter(str(llava_dir), device="cpu")
    pool = make_pairs(12)

    def draw(n: int, seed: int):
        return random.Random(seed).sample(pool, n)

    summary = run_repeats(adapter, draw, MIRSettings(n=4, repeats=3, seed=5, batch_size=4,
                                                     progress=False))  # fmt: skip
    info = summary.as_dict()
    assert info["seeds"] == [5, 6, 7] and info["repeats"] == 3
    assert info["min"] <= info["mean"] <= info["max"]
    assert len(set(info["mir"])) == 3  # different subsets, different values
    again = run_mir(adapter, draw(4, 6), RunOptions(batch_size=4, progress=False))
    assert info["mir"][1] == pytest.approx(again.mir, abs=1e-9)
    assert [r.settings["seed"] for r in summary.results] == [5, 6, 7]
    assert "baselines" not in info
    with pytest.raises(ValueError, match="repeats"):
        MIRSettings(n=4, repeats=0)


def test_baselines_with_repeats_per_subset_and_their_spread(llava_dir):
    """--baselines with --repeats: each subset gets its own baselines (seeded by its own seed,
    as a single run with that seed would), and their spread is reported."""
    adapter = load_adapter(str(llava_dir), device="cpu")
    pool = make_pairs(12)

    def draw(n: int, seed: int):
        return random.Random(seed).sample(pool, n)

    settings = MIRSettings(n=4, repeats=3, seed=2, batch_size=4, baselines=True,
                           baseline_tokens=64, progress=False)  # fmt: skip
    info = run_repeats(adapter, draw, settings).as_dict()
    single = run_mir(adapter, draw(4, 3), dataclasses.replace(settings, repeats=1, seed=3))
    spread = info["baselines"]
    assert set(spread) == {"mmd", "mmd_layerwise", "kid", "kid_layerwise"}
    assert spread["mmd"]["values"][1] == pytest.approx(single.metadata["baselines"]["mmd"])
    values = spread["kid"]["values"]
    assert len(values) == 3 and len(set(values)) == 3
    mean = sum(values) / 3
    std = (sum((v - mean) ** 2 for v in values) / 2) ** 0.5
    assert spread["kid"]["mean"] == pytest.approx(mean) and spread["kid"]["std"] == pytest.approx(
        std
    )
    assert spread["kid"]["min"] == min(values) and spread["kid"]["max"] == max(values)


def test_layer_selection_and_settings_recorded(llava_dir):
    adapter = load_adapter(str(llava_dir), device="cpu")
    res = run_mir(adapter, make_pairs(3),
                  RunOptions(layers=[2], template="plain", max_text_tokens=2, progress=False))  # fmt: skip
    assert res.layers == [2]
    assert res.settings["template"] == "plain" and res.settings["max_text_tokens"] == 2
    assert res.metadata["truncated_passages"] == 3
