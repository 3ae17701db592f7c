import numpy as np
import pytest
import torch

from modalign.metrics import centroid_gap, kid, layerwise, mmd2_unbiased, polynomial_kernel


def _np_poly(x, y):
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _np_mmd2(x, y):
    """Textbook unbiased MMD^2 with explicit double loops over pairs (independent reference)."""
    m, n = len(x), len(y)
    kxx = sum(
        _np_poly(x[i : i + 1], x[j : j + 1])[0, 0] for i in range(m) for j in range(m) if i != j
    )
    kyy = sum(
        _np_poly(y[i : i + 1], y[j : j + 1])[0, 0] for i in range(n) for j in range(n) if i != j
    )
    kxy = _np_poly(x, y).sum()
    return kxx / (m * (m - 1)) + kyy / (n * (n - 1)) - 2 * kxy / (m * n)


def _sets(seed=0, m=30, n=25, d=6):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(m, d)), rng.normal(size=(n, d)) * 1.3 + 0.4


def test_polynomial_kernel_matches_definition():
    x, y = _sets()
    np.testing.assert_allclose(
        polynomial_kernel(torch.tensor(x), torch.tensor(y)).numpy(), _np_poly(x, y)
    )
    k = polynomial_kernel(torch.tensor(x), torch.tensor(y), degree=2, gamma=0.5, coef=0.0).numpy()
    np.testing.assert_allclose(k, (0.5 * x @ y.T) ** 2)


@pytest.mark.parametrize("block", [1, 7, 2048])
def test_mmd2_unbiased_matches_reference_for_any_block(block):
    x, y = _sets(1)
    got = mmd2_unbiased(torch.tensor(x), torch.tensor(y), block=block)
    assert got == pytest.approx(_np_mmd2(x, y), rel=1e-10)


def test_mmd2_is_near_zero_for_one_distribution_and_positive_for_shift():
    rng = np.random.default_rng(2)
    a, b = torch.tensor(rng.normal(size=(400, 4))), torch.tensor(rng.normal(size=(400, 4)))
    assert abs(mmd2_unbiased(a, b)) < 0.02
    assert mmd2_unbiased(a, b + 2.0) > 0.5


def test_kid_is_the_subset_average_of_mmd():
    x, y = (torch.tensor(s) for s in _sets(3, 60, 50))
    mean, std = kid(x, y, subsets=5, subset_size=20, seed=7)
    g = torch.Generator().manual_seed(7)
    vals = []
    for _ in range(5):
        ix = torch.randperm(60, generator=g)[:20]
        iy = torch.randperm(50, generator=g)[:20]
        vals.append(_np_mmd2(x[ix].numpy(), y[iy].numpy()))
    assert mean == pytest.approx(np.mean(vals), rel=1e-10)
    assert std == pytest.approx(np.std(vals), rel=1e-8)
    with pytest.raises(ValueError, match="subset_size"):
        kid(x, y, subset_size=51)


def test_centroid_gap():
    x = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    y = torch.tensor([[0.0, 1.0], [0.0, 3.0]])
    dist, cos_gap = centroid_gap(x, y)
    assert dist == pytest.approx(np.sqrt(8))
    assert cos_gap == pytest.approx(1.0)


def test_layerwise_scales_and_reduces():
    x, y = (torch.tensor(s) for s in _sets(4))
    vals_mean, per = layerwise(mmd2_unbiased, [x, 2 * x], [y, 2 * y])
    # text-centric scaling makes the layer with doubled tokens identical to the first
    assert per[0] == pytest.approx(per[1], rel=1e-10)
    alpha = 1 / np.linalg.norm(y.numpy(), axis=1).mean()
    assert per[0] == pytest.approx(_np_mmd2(alpha * x.numpy(), alpha * y.numpy()), rel=1e-10)
    total, _ = layerwise(mmd2_unbiased, [x, x], [y, y], reduce="sum")
    assert total == pytest.approx(2 * vals_mean)
    raw, _ = layerwise(lambda a, b: centroid_gap(a, b)[0], [x], [y], text_centric=False)
    assert raw == pytest.approx(centroid_gap(x, y)[0])


def test_bad_inputs():
    x = torch.ones(5, 3)
    with pytest.raises(ValueError, match="one d"):
        mmd2_unbiased(x, torch.ones(5, 4))
    with pytest.raises(ValueError, match="at least 2"):
        mmd2_unbiased(torch.ones(1, 3), x)
    with pytest.raises(ValueError, match="NaN"):
        mmd2_unbiased(torch.full((3, 3), float("nan")), x)
    with pytest.raises(ValueError, match="zero norm"):
        layerwise(mmd2_unbiased, [x], [torch.zeros(4, 3)])
    with pytest.raises(ValueError, match="reduce"):
        layerwise(mmd2_unbiased, [x], [x], reduce="max")


def test_baseline_report_combines_the_measures():
    from modalign.metrics import baseline_report

    x, y = (torch.tensor(s) for s in _sets(5, 40, 30))
    rep = baseline_report([x, 2 * x], [y, 2 * y], kid_subsets=3, kid_subset_size=10, max_tokens=35)
    assert rep["kid_subset_size"] == 10
    # layer 2 is layer 1 doubled: text-centric scaling makes both layers equal
    assert rep["mmd_per_layer"][0] == pytest.approx(rep["mmd_per_layer"][1], rel=1e-10)
    assert rep["mmd_layerwise"] == pytest.approx(rep["mmd"], rel=1e-10)
    assert rep["centroid_gap_raw"][1] == pytest.approx(2 * rep["centroid_gap_raw"][0])


def test_kid_whole_kernel_path_equals_the_per_subset_path(monkeypatch):
    """Above GRAM_LIMIT tokens KID recomputes the kernel per subset; both give one answer."""
    import modalign.metrics.baselines as baselines

    x, y = (torch.tensor(s) for s in _sets(4, 70, 40))
    fast = kid(x, y, subsets=8, subset_size=30, seed=1)
    monkeypatch.setattr(baselines, "GRAM_LIMIT", 10)
    slow = kid(x, y, subsets=8, subset_size=30, seed=1)
    assert fast == pytest.approx(slow, rel=1e-10)
