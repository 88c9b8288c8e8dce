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
    loss = losses.nt_xent(e, e.clone(), 1.0)
    expected = -math.log(math.e / (math.e + (2 * n - 2)))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


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


def test_nt_xent_identical_views_analytic():
    # every one of the 2N views is the same vector: every similarity is 1, loss = log(2N - 1)
    z = torch.ones(4, 3)
    assert losses.nt_xent(z, z.clone(), 0.5).item() == pytest.approx(math.log(2 * 4 - 1), rel=1e-6)


def test_nt_xent_is_scale_invariant_and_symmetric():
    g = torch.Generator().manual_seed(2)
    z1, z2 = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    a = losses.nt_xent(z1, z2, 0.2)
    assert losses.nt_xent(3.0 * z1, 0.5 * z2, 0.2).item() == pytest.approx(a.item(), rel=1e-5)
    assert losses.nt_xent(z2, z1, 0.2).item() == pytest.approx(a.item(), rel=1e-5)


def ref_cosine(a, b):
    return float(a @ b) / math.sqrt(float(a @ a) * float(b @ b))


def test_negative_cosine_matches_reference_and_analytic():
    g = torch.Generator().manual_seed(3)
    p, z = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    ref = -sum(ref_cosine(p[i], z[i]) for i in range(6)) / 6
    assert losses.negative_cosine(p, z).item() == pytest.approx(ref, rel=1e-5)
    assert losses.negative_cosine(p, 2.5 * p).item() == pytest.approx(
        -1.0, abs=1e-6
    )  # identical directions: minimum -1
    assert losses.negative_cosine(p, -p).item() == pytest.approx(1.0, abs=1e-6)
    e = torch.eye(4)
    assert losses.negative_cosine(e[:2], e[2:]).item() == pytest.approx(0.0, abs=1e-7)  # orthogonal


def test_negative_cosine_stops_gradient_on_target():
    p = torch.randn(3, 4, requires_grad=True)
    z = torch.randn(3, 4, requires_grad=True)
    losses.negative_cosine(p, z).backward()
    assert p.grad is not None and z.grad is None


def test_byol_loss_matches_reference_and_analytic():
    g = torch.Generator().manual_seed(4)
    p, z = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    ref = sum(2 - 2 * ref_cosine(p[i], z[i]) for i in range(6)) / 6
    assert losses.byol_loss(p, z).item() == pytest.approx(ref, rel=1e-5)
    # = squared distance of the normalised vectors
    mse = ((F.normalize(p, dim=1) - F.normalize(z, dim=1)) ** 2).sum(1).mean()
    assert losses.byol_loss(p, z).item() == pytest.approx(mse.item(), rel=1e-5)
    assert losses.byol_loss(p, 3 * p).item() == pytest.approx(0.0, abs=1e-6)  # identical
    e = torch.eye(4)
    assert losses.byol_loss(e[:2], e[2:]).item() == pytest.approx(2.0, abs=1e-6)  # orthogonal
    assert losses.byol_loss(p, -p).item() == pytest.approx(4.0, abs=1e-6)  # opposite
    pp, zz = p.clone().requires_grad_(), z.clone().requires_grad_()
    losses.byol_loss(pp, zz).backward()
    assert pp.grad is not None and zz.grad is None


def ref_sinkhorn(scores, eps, iters):
    """SwAV's Algorithm 1 with explicit loops over prototypes (rows of Q) and samples (columns)."""
    b, k = scores.shape
    q = [[math.exp(float(scores[i, j]) / eps) for i in range(b)] for j in range(k)]  # [K][B]
    total = sum(map(sum, q))
    q = [[v / total for v in row] for row in q]
    for _ in range(iters):
        for j in range(k):
            r = sum(q[j])
            q[j] = [v / r / k for v in q[j]]
        for i in range(b):
            c = sum(q[j][i] for j in range(k))
            for j in range(k):
                q[j][i] = q[j][i] / c / b
    return torch.tensor([[q[j][i] * b for j in range(k)] for i in range(b)])


def test_sinkhorn_matches_reference():
    g = torch.Generator().manual_seed(5)
    scores = F.normalize(torch.randn(7, 4, generator=g), dim=1)  # cosine scores in [-1, 1]
    for eps, iters in ((0.05, 3), (0.5, 1), (0.1, 10)):
        q = losses.sinkhorn(scores, eps, iters)
        assert q.shape == (7, 4)
        assert torch.allclose(q, ref_sinkhorn(scores, eps, iters), atol=1e-5)


def test_sinkhorn_rows_sum_to_one_and_columns_equipartition():
    g = torch.Generator().manual_seed(6)
    b, k = 12, 4
    scores = F.normalize(torch.randn(b, 16, generator=g), dim=1) @ F.normalize(torch.randn(16, k, generator=g), dim=0)
    q = losses.sinkhorn(scores, 0.05, 3)
    assert torch.allclose(q.sum(1), torch.ones(b), atol=1e-5)  # each row a distribution: exact after the last step
    assert (q >= 0).all()
    q = losses.sinkhorn(scores, 0.05, 200)  # converged: every prototype gets B/K of the mass
    assert torch.allclose(q.sum(0), torch.full((k,), b / k), atol=1e-3)


def test_sinkhorn_uniform_scores_give_uniform_codes():
    q = losses.sinkhorn(torch.full((6, 3), 0.7), 0.05, 3)
    assert torch.allclose(q, torch.full((6, 3), 1 / 3), atol=1e-6)
    assert torch.allclose(q.sum(0), torch.full((3,), 2.0), atol=1e-5)  # column sums equal (B/K)


def test_sinkhorn_is_stable_and_shift_invariant():
    g = torch.Generator().manual_seed(7)
    scores = torch.randn(5, 3, generator=g)
    # exp(scores / 0.03) overflows float32 for scores near 3 (exp(100)); subtracting the maximum keeps it finite
    high = 2.0 + torch.rand(5, 3, generator=g)
    q = losses.sinkhorn(high, 0.03, 3)
    assert torch.isfinite(q).all()
    assert torch.allclose(q, ref_sinkhorn(high - 2.0, 0.03, 3), atol=1e-5)
    assert torch.allclose(losses.sinkhorn(scores + 4.0, 0.5, 3), losses.sinkhorn(scores, 0.5, 3), atol=1e-5)


def ref_swav(scores_a, scores_b, codes_a, codes_b, t):
    def ce(codes, scores):
        total = 0.0
        for i in range(scores.shape[0]):
            den = sum(math.exp(float(s) / t) for s in scores[i])
            total += -sum(
                float(codes[i, j]) * math.log(math.exp(float(scores[i, j]) / t) / den) for j in range(scores.shape[1])
            )
        return total / scores.shape[0]

    return 0.5 * (ce(codes_a, scores_b) + ce(codes_b, scores_a))


def test_swav_loss_matches_reference_and_analytic():
    g = torch.Generator().manual_seed(8)
    sa, sb = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    ca, cb = losses.sinkhorn(sa, 0.05, 3), losses.sinkhorn(sb, 0.05, 3)
    assert losses.swav_loss(sa, sb, ca, cb, 0.1).item() == pytest.approx(ref_swav(sa, sb, ca, cb, 0.1), rel=1e-5)
    # uniform codes and uniform scores: cross-entropy of two uniform distributions = log K
    u = torch.full((3, 6), 1 / 6)
    assert losses.swav_loss(torch.zeros(3, 6), torch.zeros(3, 6), u, u, 0.1).item() == pytest.approx(
        math.log(6), rel=1e-6
    )
    # one-hot codes predicted by matching one-hot scores: -log softmax(1/t at the code)
    e = torch.eye(3)
    t = 0.5
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2))
    assert losses.swav_loss(e, e, e, e, t).item() == pytest.approx(expected, rel=1e-6)


def test_swav_multicrop_loss_matches_loop_and_two_crop_case():
    g = torch.Generator().manual_seed(9)
    scores = [torch.randn(4, 5, generator=g) for _ in range(5)]  # 2 large + 3 small crops
    codes = [losses.sinkhorn(s, 0.05, 3) for s in scores[:2]]
    t = 0.1
    ref = 0.0
    for i in range(2):
        sub = 0.0
        for v in range(5):
            if v != i:
                sub += ref_swav(scores[v], scores[v], codes[i], codes[i], t)  # both halves are the same term
        ref += sub / 4
    ref /= 2
    assert losses.swav_multicrop_loss(scores, codes, t).item() == pytest.approx(ref, rel=1e-5)
    two = losses.swav_multicrop_loss(scores[:2], codes, t)
    assert two.item() == pytest.approx(losses.swav_loss(scores[0], scores[1], codes[0], codes[1], t).item(), rel=1e-6)


def test_losses_return_scalars():
    z = F.normalize(torch.randn(4, 6), dim=1)
    for value in (
        losses.nt_xent(z, z),
        losses.info_nce(z, z, z),
        losses.negative_cosine(z, z),
        losses.byol_loss(z, z),
        losses.swav_loss(z, z, losses.sinkhorn(z), losses.sinkhorn(z)),
        losses.looc_loss([z, z], [torch.stack([z, z])] * 2, [z, z]),
    ):
        assert value.dim() == 0
