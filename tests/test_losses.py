"""Losses against hand-written references (explicit loops) and analytic values."""
import math

import pytest
import torch
import torch.nn.functional as F

from cssl_bench.methods import losses


def ref_nt_xent(z1, z2, t):
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n2 = z.shape[0]
    n = n2 // 2
    total = 0.0
    for i in range(n2):
        pos = (i + n) % n2
        num = math.exp(float(z[i] @ z[pos]) / t)
        den = sum(math.exp(float(z[i] @ z[j]) / t) for j in range(n2) if j != i)
        total += -math.log(num / den)
    return total / n2


def ref_info_nce(q, k, neg, t):
    total = 0.0
    for i in range(q.shape[0]):
        pos = math.exp(float(q[i] @ k[i]) / t)
        den = pos + sum(math.exp(float(q[i] @ neg[j]) / t) for j in range(neg.shape[0]))
        total += -math.log(pos / den)
    return total / q.shape[0]


def test_nt_xent_matches_reference():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    for t in (0.1, 0.5):
        assert losses.nt_xent(z1, z2, t).item() == pytest.approx(ref_nt_xent(z1, z2, t), rel=1e-5)


def test_nt_xent_analytic_orthogonal():
    # 2N mutually orthogonal views except identical pairs: positive sim 1, all negatives 0
    n = 3
    e = torch.eye(2 * n)[:n, :]  # n orthonormal vectors in R^{2n}
    l = losses.nt_xent(e, e.clone(), 1.0)
    expected = -math.log(math.e / (math.e + (2 * n - 2)))
    assert l.item() == pytest.approx(expected, rel=1e-6)


def test_info_nce_matches_reference_and_analytic():
    g = torch.Generator().manual_seed(1)
    q = F.normalize(torch.randn(4, 8, generator=g), dim=1)
    k = F.normalize(torch.randn(4, 8, generator=g), dim=1)
    neg = F.normalize(torch.randn(7, 8, generator=g), dim=1)
    assert losses.info_nce(q, k, neg, 0.2).item() == pytest.approx(ref_info_nce(q, k, neg, 0.2), rel=1e-5)
    # identical q and k, negatives orthogonal to q: loss = -log(e^{1/t} / (e^{1/t} + K))
    q = torch.eye(4)[:2]
    neg = torch.eye(4)[2:]
    t = 0.5
    assert losses.info_nce(q, q, neg, t).item() == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 2)), rel=1e-6)


def test_info_nce_does_not_backprop_into_keys():
    q = F.normalize(torch.randn(3, 4), dim=1).requires_grad_()
    k = F.normalize(torch.randn(3, 4), dim=1).requires_grad_()
    losses.info_nce(q, k, F.normalize(torch.randn(5, 4), dim=1), 0.2).backward()
    assert q.grad is not None and k.grad is None
