"""The exact per-dimension median (`outliers="median"`): bracketing passes, fallback, estimate."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from modalign.errors import ConfigError, DataError
from modalign.metrics import MIRAccumulator, compute_mir
from modalign.metrics import median as median_mod
from modalign.metrics.median import MedianSearch, _kth_per_column, bracket_positions

from .reference import mir_reference


def lower_median(x: torch.Tensor) -> torch.Tensor:
    """torch's rule, independently: np.sort(x, axis=0)[(n - 1) // 2] (np.median would average)."""
    a = x.float().numpy() if x.dtype == torch.bfloat16 else x.numpy()
    return torch.from_numpy(np.sort(a, axis=0)[(len(a) - 1) // 2]).to(x.dtype)


def _search(x: torch.Tensor, m: int, batches: int, seed: int = 0) -> tuple[torch.Tensor, int]:
    """Run the search protocol over x fed in `batches` chunks; (median, passes)."""
    g = torch.Generator().manual_seed(seed)
    s = MedianSearch(x.shape[0], x[torch.randperm(x.shape[0], generator=g)[:m]])
    while True:
        for chunk in x.chunk(batches):
            s.update(chunk)
        if not s.needs_pass():
            return s.result(), s.passes
        s.begin_pass()


def _layers(seed: int, k: int = 3, n_v: int = 60_000, n_t: int = 6_000, d: int = 12):
    """float32 tokens with massive-activation outliers (a few dims x 40) in every vision set."""
    rng = np.random.default_rng(seed)
    vision, text = [], []
    for i in range(k):
        v = rng.normal(size=(n_v, d)) * (1 + 0.5 * i) + rng.normal(size=d) * 3 + 6.0
        v[rng.choice(n_v, 300, replace=False), :3] *= 40.0
        t = rng.normal(size=(n_t, d)) * 2 + rng.normal(size=d)
        t[rng.choice(n_t, 20, replace=False)] *= 8.0
        vision.append(torch.from_numpy(v.astype(np.float32)))
        text.append(torch.from_numpy(t.astype(np.float32)))
    return vision, text


def _feed_passes(acc: MIRAccumulator, vision, text, batches: int = 7):
    def feed(a: MIRAccumulator) -> None:
        for vs, ts in zip(
            zip(*[v.chunk(batches) for v in vision], strict=True),
            zip(*[t.chunk(batches) for t in text], strict=True),
            strict=True,
        ):
            a.update(list(vs), list(ts))

    return acc.accumulate(feed)


# ----------------------------------------------------------------------------- MedianSearch
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_search_is_exact_on_60k_tokens(dtype):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(60_000, 24, generator=g) * torch.linspace(0.1, 10, 24) + 3).to(dtype)
    got, passes = _search(x, 4096, batches=9)
    assert passes == 1 and got.dtype == dtype
    assert torch.equal(got, lower_median(x))
    assert torch.equal(got, x.median(dim=0).values)  # torch's own lower median


def test_search_with_heavy_ties_and_even_count():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(-2, 3, (10_000, 6), generator=g).double()  # five values: ties everywhere
    x[:, 0] = 0.0  # a constant dimension
    assert torch.equal(_search(x, 300, batches=4)[0], lower_median(x))


def test_bracket_miss_is_resolved_by_one_more_pass(monkeypatch):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(60_000, 16, generator=g)
    monkeypatch.setattr(median_mod, "BRACKET_Z", 0.0)  # a bracket of +-1 sample rank: misses
    got, passes = _search(x, 4096, batches=5)
    assert passes == 2  # the fallback pass ran, and once is always enough
    assert torch.equal(got, lower_median(x))


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 400),
    d=st.integers(1, 4),
    frac=st.floats(0.01, 1.0),
    levels=st.sampled_from([3, 50, 0]),  # 0: continuous values, else that many distinct ones
    z=st.sampled_from([0.0, 1.0, 6.0]),
    grid=st.sampled_from([0, 1, 32]),
    batches=st.integers(1, 5),
    seed=st.integers(0, 10_000),
)
def test_search_is_exact_on_any_small_stream(n, d, frac, levels, z, grid, batches, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    if levels:
        x = (x * levels / 4).round()
    m = max(1, round(frac * n))
    s = MedianSearch(n, x[torch.randperm(n, generator=g)[:m]], z=z, grid=grid)
    for _ in range(3):  # at most two passes, whatever the bracket did
        if s._settled:
            break
        for chunk in x.chunk(batches):
            s.update(chunk)
        if s.needs_pass():
            s.begin_pass()
    assert not s.needs_pass() and s.passes <= 2
    assert torch.equal(s.result(), lower_median(x))


def test_kth_per_column_skips_unselected_columns_however_many_values_they_hold():
    # per count row: column 0, then 1, then 2; column 1 (resolved elsewhere) holds the most
    chunks = [torch.tensor([5.0, 1.0, *[9.0] * 7, 2.0]), torch.tensor([3.0, 7.0, 7.0, 0.0])]
    counts = torch.tensor([[2, 7, 1], [1, 2, 1]])
    select = torch.tensor([True, False, True])
    got = _kth_per_column(chunks, counts, select, torch.tensor([1, 0, 0]))
    assert got.tolist() == [3.0, 0.0]  # 2nd smallest of {5, 1, 3}; smallest of {2, 0}
    one = [torch.cat(chunks)]  # the layout after a distributed reduction: one chunk
    assert _kth_per_column(one, counts, select, torch.tensor([2, 0, 1])).tolist() == [5.0, 2.0]


def test_sample_of_every_token_needs_no_pass():
    x = torch.randn(101, 3, dtype=torch.float64)
    s = MedianSearch(101, x[torch.randperm(101)])
    assert not s.needs_pass() and torch.equal(s.result(), lower_median(x))


def test_search_misuse_is_an_error():
    x = torch.randn(1000, 2)
    s = MedianSearch(1000, x[:100])
    s.update(x[:400])
    with pytest.raises(DataError, match="same tokens"):
        s.needs_pass()
    s = MedianSearch(1000, x[:100])
    s.update(x)
    assert not s.needs_pass()
    with pytest.raises(RuntimeError, match="settled"):
        s.update(x)
    with pytest.raises(RuntimeError, match="no further pass"):
        s.begin_pass()
    with pytest.raises(ValueError, match="cannot come from"):
        MedianSearch(10, x[:20])


def test_bracket_width_follows_the_formula():
    pos, w = bracket_positions(4096, 57_600)
    lo, hi = pos[w], pos[w + 1]
    p = 28_800 / 57_601
    half = 6 * (4096 * p * (1 - p) * (57_600 - 4096) / 57_599) ** 0.5 + 1
    assert hi - lo == pytest.approx(2 * half, abs=2)
    assert all(q < lo or q > hi for q in pos if q not in (lo, hi))
    assert bracket_positions(10, 1000, z=100)[0] == []  # bracket wider than the sample: no edges


# ----------------------------------------------------------------------------- through MIR
def test_accumulator_streams_the_exact_median_and_mir():
    vision, text = _layers(0)
    acc = MIRAccumulator(3, outliers="median")
    _feed_passes(acc, vision, text)
    assert acc.passes == 2  # one re-feed for the median
    for v, s in zip(vision, acc.sets["vision"], strict=True):
        assert torch.equal(s.median_vector(), lower_median(v))
    res = acc.compute()
    assert res.settings["median"] == "exact" and res.settings["passes"] == 2
    ref, ref_layers = mir_reference(
        [v.double().numpy() for v in vision], [t.double().numpy() for t in text], "median"
    )
    assert res.mir == pytest.approx(ref, abs=1e-9)
    np.testing.assert_allclose(res.per_layer, ref_layers, rtol=1e-8)


def test_tail_overflow_and_median_share_one_pass(monkeypatch):
    vision, text = _layers(1, k=2)
    one = compute_mir(vision, text, outliers="median")
    acc = MIRAccumulator(2, outliers="median", tail_capacity=50)  # 300 outliers overflow it
    _feed_passes(acc, vision, text)
    assert acc.passes == 2
    assert any(s.in_second_pass for s in acc.sets["vision"])
    assert acc.compute().mir == pytest.approx(one.mir, abs=1e-12)
    monkeypatch.setattr(median_mod, "BRACKET_Z", 0.0)  # plus a missed bracket: one more pass
    acc = MIRAccumulator(2, outliers="median", tail_capacity=50)
    _feed_passes(acc, vision, text)
    assert acc.passes == 3
    assert acc.compute().mir == pytest.approx(one.mir, abs=1e-12)


def test_no_outliers_no_extra_pass():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(20_000, 8, generator=g)
    radius = torch.rand(20_000, 1, generator=g) + 4.5  # uniform norms: |r - 5| <= 0.5 < 3 std
    tokens = x / x.norm(dim=1, keepdim=True) * radius
    acc = MIRAccumulator(1, outliers="median", median_sample=100)
    acc.update([tokens], [tokens[:5000] * 0.5])
    assert not acc.needs_another_pass
    assert acc.compute().outliers_vision == [0]


def test_estimate_mode_keeps_one_pass_and_is_recorded():
    vision, text = _layers(2, k=1)
    exact = compute_mir(vision, text, outliers="median")
    est = compute_mir(vision, text, outliers="median", median="estimate")
    assert est.settings["median"] == "estimate" and est.settings["passes"] == 1
    assert est.mir != exact.mir and est.mir == pytest.approx(exact.mir, abs=1e-3)
    small_v, small_t = [v[:4000] for v in vision], [t[:4000] for t in text]
    # at most median_sample tokens: the sample is every token and the "estimate" exact
    est = compute_mir(small_v, small_t, outliers="median", median="estimate")
    assert est.mir == compute_mir(small_v, small_t, outliers="median").mir


def test_refeed_must_match_in_the_median_pass():
    vision, text = _layers(3, k=1, n_v=10_000)
    acc = MIRAccumulator(1, outliers="median", median_sample=500)
    acc.update(vision, text)
    assert acc.needs_another_pass
    acc.begin_next_pass()
    acc.update([vision[0][:9000]], text)
    with pytest.raises(DataError, match="same tokens"):
        acc.compute()


def test_median_option_is_validated():
    with pytest.raises(ConfigError, match="median must be one of"):
        MIRAccumulator(1, median="approx")
    from modalign.measure.run import RunOptions

    assert RunOptions().median == "exact"
    with pytest.raises(ConfigError, match="median: 'approx' is not one of: exact, estimate"):
        RunOptions(median="approx")
