import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from modalign.metrics import Moments, merge_moments, moments_from_tokens, subtract_moments


def _tokens(n: int, d: int, seed: int, offset: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) * 2.0 + offset


def test_moments_match_numpy():
    x = _tokens(200, 7, 0)
    m = moments_from_tokens(x)
    assert m.n == 200
    np.testing.assert_allclose(m.mean.numpy(), x.numpy().mean(0), rtol=1e-12)
    np.testing.assert_allclose(m.covariance().numpy(), np.cov(x.numpy(), rowvar=False), rtol=1e-10)
    np.testing.assert_allclose(m.sum.numpy(), x.numpy().sum(0), rtol=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 60), split=st.floats(0, 1), d=st.integers(1, 6), seed=st.integers(0, 10_000)
)
def test_merge_of_halves_equals_whole(n, split, d, seed):
    x = _tokens(n, d, seed, offset=3.0)
    cut = round(split * n)
    whole = moments_from_tokens(x)
    merged = merge_moments(moments_from_tokens(x[:cut]), moments_from_tokens(x[cut:]))
    assert merged.n == whole.n
    torch.testing.assert_close(merged.mean, whole.mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(merged.m2, whole.m2, rtol=1e-10, atol=1e-9)
    back = subtract_moments(whole, moments_from_tokens(x[cut:]))
    assert back.n == cut
    if cut:
        torch.testing.assert_close(back.mean, x[:cut].mean(0), rtol=1e-9, atol=1e-9)


def test_streaming_updates_equal_one_shot_and_memory_is_fixed():
    x = _tokens(1000, 5, 1)
    m = Moments.empty(5)
    for chunk in x.split(37):
        m.update(chunk)
    ref = moments_from_tokens(x)
    torch.testing.assert_close(m.m2, ref.m2, rtol=1e-10, atol=1e-9)
    assert m.m2.shape == (5, 5) and m.mean.shape == (5,)


def test_large_offset_is_numerically_stable():
    # LLM hidden states have a few huge dimensions; naive sum-of-squares would cancel.
    x = _tokens(500, 4, 2, offset=1e7)
    m = Moments.empty(4)
    for chunk in x.split(50):
        m.update(chunk)
    ref = np.cov((x - 1e7).numpy(), rowvar=False)
    np.testing.assert_allclose(m.covariance().numpy(), ref, rtol=1e-6)


def test_add_copies_equals_feeding_duplicates():
    x = _tokens(20, 3, 3)
    v = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    a = moments_from_tokens(x).add_copies(v, 4)
    b = moments_from_tokens(torch.cat([x, v.expand(4, 3)]))
    torch.testing.assert_close(a.m2, b.m2)
    torch.testing.assert_close(a.mean, b.mean)


def test_errors():
    with pytest.raises(ValueError, match="at least 2"):
        moments_from_tokens(torch.ones(1, 3)).covariance()
    with pytest.raises(ValueError, match="2-D"):
        moments_from_tokens(torch.ones(3))
    with pytest.raises(ValueError, match="dimension"):
        merge_moments(Moments.empty(3), moments_from_tokens(torch.ones(2, 4)))
    with pytest.raises(ValueError, match="cannot remove"):
        subtract_moments(
            moments_from_tokens(torch.ones(2, 3)), moments_from_tokens(torch.ones(3, 3))
        )
