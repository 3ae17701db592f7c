"""The shared InfoNCE in one process: a float64 loop written from the equation (extra negatives,
keys, temperatures), gradients by finite differences, bit-identity with the implementations it
replaced (SEA's, the contrastive objective's and the lab's NegCLIP), and the bad inputs."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from modalign_lab.towers.clip_loss import negclip_loss

from modalign.errors import DataError, ModelError
from modalign.methods.objectives import (
    InfoNCE,
    gather_rows,
    infonce_from_logits,
    symmetric_infonce,
)


def _reference(a, b, s, extra=None, keys=None) -> float:
    """The module docstring's equation, one term at a time in float64 numpy."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    e = (
        np.zeros((0, a.shape[1]))
        if extra is None
        else extra / np.linalg.norm(extra, axis=1)[:, None]
    )
    n = a.shape[0]
    keys = list(range(n)) if keys is None else list(keys)
    total = 0.0
    for i in range(n):
        valid = [j for j in range(n) if j == i or keys[j] != keys[i]]
        den_a = sum(math.exp(s * a[i] @ b[j]) for j in valid)
        den_a += sum(math.exp(s * a[i] @ row) for row in e)
        den_b = sum(math.exp(s * b[i] @ a[j]) for j in valid)
        total += -math.log(math.exp(s * a[i] @ b[i]) / den_a)
        total += -math.log(math.exp(s * b[i] @ a[i]) / den_b)
    return total / (2 * n)


def _data(n=6, m=3, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(k, d, generator=g, dtype=torch.float64) for k in (n, n, m)]


@pytest.mark.parametrize("scale", [1.0, 1 / 0.07, 100.0])
@pytest.mark.parametrize("extra", [False, True])
@pytest.mark.parametrize("keys", [None, [0, 1, 2, 1, 3, 0]])
def test_matches_the_equation_in_float64(scale, extra, keys):
    a, b, e = _data()
    got = symmetric_infonce(a, b, torch.tensor(scale, dtype=torch.float64),
                            extra_b=e if extra else None,
                            keys=None if keys is None else torch.tensor(keys))  # fmt: skip
    want = _reference(a.numpy(), b.numpy(), scale, e.numpy() if extra else None, keys)
    assert float(got) == pytest.approx(want, rel=1e-12)


def test_extra_negatives_and_keys_move_the_loss_the_right_way():
    a, b, _ = _data()
    s = torch.tensor(5.0, dtype=torch.float64)
    plain = symmetric_infonce(a, b, s)
    # Every extra negative adds a denominator term: the loss rises.
    assert symmetric_infonce(a, b, s, extra_b=b[:1].clone()) > plain
    # Two pairs sharing a key no longer push apart: masking removes denominator terms.
    assert symmetric_infonce(a, b, s, keys=torch.tensor([0, 0, 1, 2, 3, 4])) < plain
    # Unique keys mask nothing, bit for bit.
    assert torch.equal(symmetric_infonce(a, b, s, keys=torch.arange(6)), plain)


def test_temperature_sharpens_and_the_gradients_match_finite_differences():
    a, b, e = _data(n=4, m=2, d=3, seed=1)
    b = a + 0.1 * b  # well-aligned pairs: a larger scale lowers the loss
    losses = [float(symmetric_infonce(a, b, torch.tensor(s, dtype=torch.float64)))
              for s in (1.0, 10.0, 100.0)]  # fmt: skip
    assert losses[0] > losses[1] > losses[2]
    keys = torch.tensor([0, 1, 0, 2])
    inputs = [
        t.clone().requires_grad_(True) for t in (a, b, e, torch.tensor(3.0, dtype=torch.float64))
    ]
    fn = lambda a, b, e, s: symmetric_infonce(a, b, s, extra_b=e, keys=keys)  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs)


def _old_symmetric_infonce(a, b, logit_scale):
    """SEA's and the contrastive objective's InfoNCE before this module (for bit-identity)."""
    logits = logit_scale * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T  # (N, N)
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def _old_negclip_loss(outputs, labels):
    """The lab's NegCLIP loss before it called the shared InfoNCE (for bit-identity)."""
    b = labels.numel()
    per_image = outputs.logits_per_image  # (B, B + N)
    per_text = outputs.logits_per_text[:b]  # (B, B)
    return 0.5 * (F.cross_entropy(per_image, labels) + F.cross_entropy(per_text, labels))


@pytest.mark.parametrize("seed", range(5))
def test_single_process_values_are_bit_identical_to_the_old_implementations(seed):
    g = torch.Generator().manual_seed(seed)
    n, d = 24 + seed, 128
    a, b = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    for s in (torch.tensor(1.0), torch.tensor(1 / 0.07), torch.tensor(100.0)):
        old = _old_symmetric_infonce(a, b, s)
        assert torch.equal(symmetric_infonce(a, b, s), old)  # contrastive
        assert torch.equal(
            symmetric_infonce(a, b, s, keys=torch.randperm(n, generator=g)), old
        )  # SEA
    # Gradients too (SEA's connector and temperature).
    grads = []
    for fn in (_old_symmetric_infonce, lambda *x: symmetric_infonce(*x, keys=torch.arange(n))):
        a_, s_ = a.clone().requires_grad_(True), torch.tensor(2.0, requires_grad=True)
        fn(a_, b, s_).backward()
        grads.append((a_.grad, s_.grad))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])
    # The lab's NegCLIP on random logits, with and without negative captions.
    for extra in (0, 7):
        li = torch.randn(n, n + extra, generator=g) * 10  # (B, B + N)
        out = SimpleNamespace(logits_per_image=li, logits_per_text=li.T)
        labels = torch.arange(n)
        assert torch.equal(negclip_loss(out, labels), _old_negclip_loss(out, labels))


def test_module_local_loss_and_gather_in_one_process():
    a, b, e = _data()
    s = torch.tensor(2.0, dtype=torch.float64)
    want = symmetric_infonce(a, b, s, extra_b=e)
    assert torch.equal(InfoNCE()(a, b, s, extra_b=e), want)
    # local_loss only matters with several processes; alone it is the global loss.
    assert torch.equal(InfoNCE(local_loss=True)(a, b, s, extra_b=e), want)
    rows, offset = gather_rows(a, b)
    assert rows[0] is a and rows[1] is b and offset == 0
    assert float(InfoNCE()(a, b, 2.0)) == pytest.approx(
        float(symmetric_infonce(a, b, s)), rel=1e-15
    )


def test_infonce_from_logits_is_the_two_cross_entropies():
    g = torch.Generator().manual_seed(4)
    ab, ba = torch.randn(3, 5, generator=g, dtype=torch.float64), torch.randn(3, 3, generator=g,
                                                                              dtype=torch.float64)  # fmt: skip
    t = torch.tensor([2, 0, 1])
    lse = lambda m: np.log(np.exp(m).sum(1))  # noqa: E731
    want = 0.5 * (np.mean(lse(ab.numpy()) - ab.numpy()[[0, 1, 2], t])
                  + np.mean(lse(ba.numpy()) - ba.numpy()[[0, 1, 2], t]))  # fmt: skip
    assert float(infonce_from_logits(ab, ba, t)) == pytest.approx(want, rel=1e-12)
    assert float(infonce_from_logits(ab, ba, t, reduction="sum")) == pytest.approx(
        3 * want, rel=1e-12
    )


def test_bad_inputs():
    a, b, e = _data()
    s = torch.tensor(1.0, dtype=torch.float64)
    with pytest.raises(ModelError, match="two \\(n, D\\) tensors"):
        symmetric_infonce(a, b[:5], s)
    with pytest.raises(ModelError, match="two \\(n, D\\) tensors"):
        symmetric_infonce(a[0], b[0], s)
    with pytest.raises(ModelError, match="extra negatives must be"):
        symmetric_infonce(a, b, s, extra_b=e[:, :4])
    with pytest.raises(ModelError, match="keys must be 6 integers"):
        symmetric_infonce(a, b, s, keys=torch.zeros(6))
    with pytest.raises(ModelError, match="keys must be 6 integers"):
        symmetric_infonce(a, b, s, keys=torch.arange(5))
    with pytest.raises(DataError, match=r"objective 'x': the batch yields 1 pair.*at least 2"):
        symmetric_infonce(a[:1], b[:1], s, name="objective 'x'")
    with pytest.raises(DataError, match="yields 0 pair"):
        symmetric_infonce(a[:0], b[:0], s)
    with pytest.raises(ModelError, match="3 targets"):
        infonce_from_logits(torch.zeros(4, 4), torch.zeros(3, 3), torch.arange(3))
    with pytest.raises(ModelError, match="fewer than"):
        infonce_from_logits(torch.zeros(3, 2), torch.zeros(3, 3), torch.arange(3))
    with pytest.raises(ModelError, match="must be \\(rows, columns\\)"):
        infonce_from_logits(torch.zeros(3), torch.zeros(3, 3), torch.arange(3))
