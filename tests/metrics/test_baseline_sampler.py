"""Streaming baselines: equal to the in-memory report when everything fits; bounded otherwise."""

from __future__ import annotations

import pytest
import torch

from modalign.errors import ConfigError, MetricError
from modalign.metrics import baseline_report
from modalign.metrics.baseline_sampler import BaselineSampler


def _data(seed=0, k=2, n_v=300, n_t=200, d=6):
    g = torch.Generator().manual_seed(seed)
    vision = [torch.randn(n_v, d, generator=g) * (1 + i) + 0.5 for i in range(k)]
    text = [torch.randn(n_t, d, generator=g) for _ in range(k)]
    return vision, text


def test_streamed_batches_equal_the_in_memory_report_when_all_tokens_fit():
    vision, text = _data()
    sampler = BaselineSampler(2, max_tokens=1000)
    for start in range(0, 300, 64):  # uneven batches, text in different chunks
        sampler.update(
            [v[start : start + 64] for v in vision], [t[start : start + 64] for t in text]
        )
    got = sampler.report(kid_subsets=10, kid_subset_size=50)
    ref = baseline_report(vision, text, max_tokens=1000, kid_subsets=10, kid_subset_size=50)
    for key in ("mmd", "mmd_layerwise", "kid", "kid_layerwise"):
        assert got[key] == pytest.approx(ref[key], rel=1e-10)
    assert got["sampled_tokens"] == [300, 200]


def test_sample_is_bounded_and_shares_positions_across_layers():
    vision, text = _data(n_v=5000)
    vision[1] = vision[0] * 2  # layer 1 = layer 0 scaled: same positions => exactly scaled sample
    sampler = BaselineSampler(2, max_tokens=128, seed=3)
    for start in range(0, 5000, 500):
        sampler.update([v[start : start + 500] for v in vision], [t[:10] for t in text])
    v0, v1 = sampler.samples("vision")
    assert v0.shape == (128, 6) and torch.equal(v1, v0 * 2)


def test_bad_input():
    with pytest.raises(ConfigError):
        BaselineSampler(0)
    sampler = BaselineSampler(1)
    with pytest.raises(MetricError, match="expected 1 layers"):
        sampler.update([torch.ones(3, 2)] * 2, [torch.ones(3, 2)])
    sampler.update([torch.ones(1, 2)], [torch.ones(5, 2)])
    with pytest.raises(MetricError, match="fewer than 2 vision tokens"):
        sampler.report()
