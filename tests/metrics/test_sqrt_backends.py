"""Square-root backends are objects: what a caller does with one follows from its properties
(is it a Fréchet distance, may per-layer values be negative, what to warn), never its name."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import modalign.metrics as metrics
from modalign.errors import ConfigError, MetricError
from modalign.metrics import (
    SQRT_BACKENDS,
    SqrtBackend,
    compute_mir,
    frechet_distance,
    frechet_distance_tokens,
    sqrt_backend,
)
from modalign.metrics.mir import mir_from_per_layer


def _product_trace(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """tr(S_a S_b), what the official code's iteration returns on well-conditioned input."""
    return torch.trace(a.to(torch.float64) @ b.to(torch.float64))


# an unregistered backend with the official one's properties under another name
TRACE_PRODUCT = SqrtBackend(
    "trace_product", _product_trace, frechet=False, negative_layers=True,
    caveat="uses tr(S_a S_b)", negative_sum="tr(S_a S_b) can make it negative",
)  # fmt: skip


def test_registry_holds_backends_with_their_properties():
    assert SQRT_BACKENDS.names() == ["exact", "newton_schulz", "official", "scipy"]
    for name in SQRT_BACKENDS:
        backend = SQRT_BACKENDS[name]
        assert isinstance(backend, SqrtBackend) and backend.name == name
        assert backend.frechet == (name != "official")
        assert backend.negative_layers == (name == "official")
        assert bool(backend.caveat) == bool(backend.negative_sum) == (name == "official")
        assert backend.exact == (name == "exact")
    assert sqrt_backend("scipy") is SQRT_BACKENDS["scipy"]
    assert sqrt_backend(TRACE_PRODUCT) is TRACE_PRODUCT
    with pytest.raises(ConfigError, match="unknown trace-sqrt backend 'magic'"):
        sqrt_backend("magic")


def test_every_backend_computes_the_trace_it_claims():
    rng = np.random.default_rng(0)
    xa, xb = rng.normal(size=(200, 5)), rng.normal(size=(150, 5)) * 2 + 1
    ca = torch.tensor(np.cov(xa, rowvar=False))
    cb = torch.tensor(np.cov(xb, rowvar=False))
    from scipy import linalg

    root = float(np.real(np.trace(linalg.sqrtm(ca.numpy() @ cb.numpy()))))
    for name in ("exact", "newton_schulz", "scipy"):
        assert float(SQRT_BACKENDS[name](ca, cb)) == pytest.approx(root, rel=1e-7)
    official = float(SQRT_BACKENDS["official"](ca, cb))
    assert official == pytest.approx(float(torch.trace(ca @ cb)), rel=1e-4)


def test_the_caveat_is_warned_by_property_not_by_name():
    mu, cov = np.zeros(2), np.diag([1.0, 4.0])
    with pytest.warns(UserWarning, match="sqrt='trace_product' uses tr") as record:
        value = frechet_distance(mu, cov, mu, cov, sqrt=TRACE_PRODUCT)
    assert "not a Fréchet distance" in str(record[0].message)
    assert value == pytest.approx(5.0 + 5.0 - 2 * 17.0)  # tr a + tr b - 2 tr(a b)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frechet_distance(mu, cov, mu, cov, sqrt="exact")  # no caveat, no warning


def test_negative_values_and_sums_follow_the_properties():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mir_from_per_layer([5.0, -1.0], sqrt=TRACE_PRODUCT) == pytest.approx(np.log10(4))
    with pytest.warns(RuntimeWarning, match="per-layer FD is negative"):
        mir_from_per_layer([5.0, -1.0], sqrt="exact")
    with pytest.raises(MetricError, match=r"MIR is undefined \(tr\(S_a S_b\) can make"):
        mir_from_per_layer([1.0, -2.0], sqrt=TRACE_PRODUCT)
    with pytest.raises(MetricError, match=r"MIR is undefined$"):
        mir_from_per_layer([1.0, -2.0], sqrt="exact")


def test_the_accumulator_warns_once_and_records_the_backend_name():
    g = torch.Generator().manual_seed(0)
    vision = [torch.randn(300, 4, generator=g, dtype=torch.float64) + 1 for _ in range(3)]
    text = [torch.randn(200, 4, generator=g, dtype=torch.float64) for _ in range(3)]
    with pytest.warns(UserWarning) as record:
        got = compute_mir(vision, text, sqrt=TRACE_PRODUCT, outliers="median")
    assert len(record) == 1 and "per-layer values are not Fréchet distances" in str(
        record[0].message
    )
    assert got.settings["sqrt"] == "trace_product"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        official = compute_mir(vision, text, sqrt="official", outliers="median")
    # same math as the official backend on well-conditioned data (it runs in float32)
    np.testing.assert_allclose(got.per_layer, official.per_layer, rtol=1e-4)


def test_the_low_rank_token_route_is_taken_for_exact_backends():
    calls = []

    def spy(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return SQRT_BACKENDS["exact"](a, b)

    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 10, generator=g), torch.randn(8, 10, generator=g) + 1  # n < d
    exact = SqrtBackend("spy", spy, exact=True)
    routed = frechet_distance_tokens(x, y, sqrt=exact)
    assert calls == []  # the token route: no covariance square root
    plain = frechet_distance_tokens(x, y, sqrt=SqrtBackend("spy", spy))
    assert calls == [1] and routed == pytest.approx(plain, rel=1e-8)


def test_metrics_never_test_a_backend_by_name():
    """The behaviour above comes from properties: no `sqrt == "..."` test is left in metrics."""
    pattern = re.compile(r"""sqrt\s*(==|!=|\bin\b)\s*["'(\[]""")
    for path in Path(metrics.__file__).parent.glob("*.py"):
        assert not pattern.search(path.read_text()), path.name
