"""Declared state (torchmetrics-style `add_state`) and the pure merges the distributed path uses."""

import numpy as np
import pytest
import torch

from modalign.errors import ConfigError
from modalign.metrics.distributed import REDUCERS
from modalign.metrics.reservoir import Reservoir
from modalign.metrics.state import REDUCE_KINDS, ReduceContext, Stateful
from modalign.metrics.tails import Tail
from modalign.metrics.tokenset import TokenSetAccumulator

CTX = ReduceContext(dim=3, dtype=torch.float32)


def test_every_declared_kind_has_a_reducer():
    assert set(REDUCERS) == set(REDUCE_KINDS)
    with pytest.raises(ConfigError, match="reduce must be one of"):
        Stateful().add_state("x", 0, "mean")


def test_tokenset_declares_every_state_and_reduces_per_pass():
    acc = TokenSetAccumulator("median", tail_capacity=2, median_sample=8)
    assert acc.declared_states() == {
        "moments": "moments",
        "n_seen": "sum",
        "norm_sum": "sum",
        "norms": "cat",
        "top": "merge",
        "bottom": "merge",
        "reservoir": "merge",
        "pass_seen": "sum",
        "pass_removed": "sum",
        "search": "nested",
    }
    assert acc.states_to_reduce() == [
        "moments", "n_seen", "norm_sum", "norms", "top", "bottom", "reservoir"
    ]  # fmt: skip
    assert TokenSetAccumulator("none").states_to_reduce() == ["moments", "n_seen", "norm_sum"]
    x = torch.randn(200, 3, dtype=torch.float64)
    x[:5] *= 50  # 5 outliers > the 2-row tails; 200 tokens > the 8-token sample
    acc.update(x)
    assert acc.needs_another_pass()
    acc.begin_next_pass()  # both jobs in the one re-feed
    assert acc.states_to_reduce() == ["pass_seen", "moments", "pass_removed", "search"]
    assert set(acc.search.states_to_reduce()) == {
        "seen", "hist_lower", "hist_equal", "kept_values", "kept_counts"
    }  # fmt: skip


def test_tail_merge_keeps_the_most_extreme_of_the_union():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 3, generator=g)
    norms = x.double().norm(dim=1)
    parts = []
    for rows in (slice(0, 20), slice(20, 50)):
        t = Tail(4, largest=True)
        t.update(x[rows], norms[rows])
        parts.append(t.parts(CTX))
    parts.append(Tail(4, largest=True).parts(CTX))  # a rank that saw nothing
    merged = Tail(4, largest=True).merge(parts, CTX)
    top = norms.topk(4).values
    assert torch.equal(merged.norm, top)
    assert torch.equal(merged.x.double().norm(dim=1), top)


def test_reservoir_merge_is_uniform_over_the_union_and_the_same_everywhere():
    ctx = ReduceContext(dim=1, dtype=torch.float32)
    a, b = Reservoir(10, seed=1), Reservoir(10, seed=1)
    a.update(torch.zeros(30, 1))  # rank 0: 30 tokens of value 0
    b.update(torch.ones(90, 1))  # rank 1: 90 tokens of value 1
    parts = [a.parts(ctx), b.parts(ctx)]
    merged = a.merge(parts, ctx)
    again = b.merge(parts, ctx)  # what rank 1 computes from the same gathered parts
    assert merged.seen == 120 and merged.rows.shape == (10, 1) and not merged.complete
    assert torch.equal(merged.rows, again.rows)
    # over many seeds, rank 0 supplies 1/4 of the pooled sample (multivariate hypergeometric)
    share = np.mean(
        [
            float((Reservoir(10, seed=s).merge(parts, ctx).rows == 0).float().mean())
            for s in range(400)
        ]
    )
    assert share == pytest.approx(0.25, abs=0.02)
    small = Reservoir(10, seed=2)
    small.update(torch.full((4, 1), 7.0))
    pooled = small.merge([small.parts(ctx), Reservoir(10).parts(ctx)], ctx)
    assert pooled.complete and pooled.rows.flatten().tolist() == [7.0] * 4
