"""Method details that make each implementation faithful (docs/protocols.md, section 1), checked against analytic values
and hand-written references: the shared momentum path, MoCo's queue and shuffling BN, BYOL's tau schedule
and LARS exclusions, SwAV's prototypes, SimSiam's heads and fixed predictor lr, and that every method's
loss goes down and every recipe pretrains through the CLI."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cssl_bench import UserError
from cssl_bench.config import available_methods, load_recipe
from cssl_bench.data.datasets import get_source
from cssl_bench.data.loader_base import to_input
from cssl_bench.data.views import build_view_recipe
from cssl_bench.eval import diagnostics
from cssl_bench.methods import build_method, losses
from cssl_bench.methods.base import (
    cosine_momentum,
    make_target,
    output_std,
    shuffled_forward,
    update_momentum_pairs,
)
from cssl_bench.methods.moco import KeyQueue
from cssl_bench.nn.norm import SplitBatchNorm2d, split_batchnorm
from cssl_bench.train.loop import dataset_options
from cssl_bench.train.optim import build_optimizer, lr_factor, param_groups, set_lr

METHODS = [
    "simclr",
    "moco-v1",
    "moco-v2",
    "moco-rot",
    "moco-rot-same",
    "byol",
    "swav",
    "simsiam",
    "simsiam-optimal",
    "looc",
    "looc++",
    "supervised",
]
SMALL = ["data.embedded_train=640", "data.embedded_test=200", "data.workers=0"]


def test_every_recipe_is_listed_and_described(cli):
    assert sorted(METHODS) == available_methods()
    p = cli("methods")
    assert p.returncode == 0, p.stderr
    for m in METHODS:
        assert m in p.stdout
    for m in METHODS:
        for scale in ("tiny", "small", "paper"):
            r = load_recipe(m, scale)
            if scale == "paper":
                assert r.model.backbone == "resnet50"
            else:
                assert r.model.backbone == "resnet18-w0.25" and r.data.image_size == 32


def batch_of_views(recipe, n=16, seed=0):
    """Views of the first ``n`` embedded training images, normalised, plus their labels."""
    src = get_source(recipe.data.dataset, "train", dataset_options(recipe))
    vr = build_view_recipe(recipe)
    items = [vr(src[i][0], np.random.default_rng([seed, 0, i]))[0] for i in range(n)]
    views = {k: to_input(torch.stack([it[k] for it in items]), False) for k in items[0]}
    return views, torch.tensor([int(src[i][1]) for i in range(n)])


def test_simclr_projector_and_its_output_bn_option():
    m = build_method(load_recipe("simclr", "paper"))
    assert [type(x).__name__ for x in m.projector] == ["Linear", "BatchNorm1d", "ReLU"] * 2 + ["Linear"]
    assert m.projector[-1].bias is not None and m.projector[-1].out_features == 128
    m = build_method(load_recipe("simclr", "paper", sets=["params.out_bn=true"]))
    assert [type(x).__name__ for x in m.projector][-2:] == ["Linear", "BatchNorm1d"] and m.projector[-2].bias is None


def test_simclr_joint_views_pairs_the_views_as_separate_calls_do():
    """params.joint_views: one encoder call of 2N images. With BN on fixed statistics (eval) the loss and the
    gradients equal those of one call per view (the halves are v1 then v2); in training BN normalises over
    both views, so the loss differs from the per-view one."""
    torch.manual_seed(0)
    sep = build_method(load_recipe("simclr", "tiny"))
    joint = build_method(load_recipe("simclr", "tiny", {}, ["params.joint_views=true"]))
    joint.load_state_dict(sep.state_dict())
    views, labels = batch_of_views(sep.recipe, 8)
    for m in (sep, joint):
        m.eval()
        m.zero_grad()
        m(views, labels)["loss"].backward()
    assert torch.allclose(sep(views, labels)["loss"], joint(views, labels)["loss"], atol=1e-5)
    for (name, a), b in zip(sep.named_parameters(), joint.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-5), name
    sep.train()
    joint.train()
    with torch.no_grad():
        assert not torch.allclose(sep(views, labels)["loss"], joint(views, labels)["loss"], atol=1e-4)


# --------------------------------------------------------------------------------------------------
# the shared momentum path


def test_momentum_update_is_an_ema_of_parameters_and_copies_buffers():
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    target = make_target(online)
    assert all(not p.requires_grad for p in target.parameters())
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
    online(torch.randn(8, 3))  # moves the BN running statistics
    t0 = [p.clone() for p in target.parameters()]
    update_momentum_pairs([(online, target)], 0.9)
    for p_t, p_0, p_o in zip(target.parameters(), t0, online.parameters()):
        assert torch.allclose(p_t, 0.9 * p_0 + 0.1 * p_o, atol=1e-7)
    for b_t, b_o in zip(target.buffers(), online.buffers()):
        assert torch.equal(b_t, b_o)
    update_momentum_pairs([(online, target)], 0.0)  # m = 0: a copy
    assert all(torch.equal(a, b) for a, b in zip(target.parameters(), online.parameters()))


def test_every_momentum_method_declares_its_pairs():
    for name in ("moco-v1", "moco-v2", "moco-rot", "byol", "looc"):
        m = build_method(load_recipe(name, "tiny"))
        pairs = m.momentum_pairs
        assert pairs and all(isinstance(o, nn.Module) and isinstance(t, nn.Module) for o, t in pairs)
        targets = {id(p) for _, t in pairs for p in t.parameters()}
        assert all(not p.requires_grad for _, t in pairs for p in t.parameters())
        assert not targets & {id(p) for o, _ in pairs for p in o.parameters()}
    for name in ("simclr", "swav", "simsiam", "supervised"):
        assert build_method(load_recipe(name, "tiny")).momentum_pairs == []


def test_byol_tau_schedule():
    assert cosine_momentum(0.996, 0.0) == pytest.approx(0.996)
    assert cosine_momentum(0.996, 1.0) == pytest.approx(1.0)
    assert cosine_momentum(0.996, 0.5) == pytest.approx(0.998)
    taus = [cosine_momentum(0.996, t / 20) for t in range(21)]
    assert all(a <= b for a, b in zip(taus, taus[1:]))
    m = build_method(load_recipe("byol", "paper"))
    assert m.p.tau_base == 0.996
    assert m.momentum(0.0) == pytest.approx(0.996) and m.momentum(1.0) == pytest.approx(1.0)
    assert build_method(load_recipe("moco-v2", "paper")).momentum(0.7) == 0.999


# --------------------------------------------------------------------------------------------------
# MoCo


def test_queue_holds_exactly_the_last_k_keys():
    k_size, n, d = 10, 4, 3
    q = KeyQueue(k_size, d)
    assert torch.allclose(q.keys.norm(dim=1), torch.ones(k_size))  # initial keys: random unit vectors
    pushed = []
    for step in range(7):  # 28 keys: wraps around the end of the buffer twice
        k = torch.arange(step * n, (step + 1) * n, dtype=torch.float32)[:, None].repeat(1, d)
        q.push(k)
        pushed.extend(range(step * n, (step + 1) * n))
        if len(pushed) >= k_size:
            assert sorted(q.keys[:, 0].tolist()) == [float(x) for x in pushed[-k_size:]]
        assert int(q.ptr) == len(pushed) % k_size
    # FIFO positions: key number j sits at slot j mod K
    for j in pushed[-k_size:]:
        assert q.keys[j % k_size, 0].item() == j
    big = torch.arange(100, 125, dtype=torch.float32)[:, None].repeat(1, d)  # more keys than slots: the newest K
    q.push(big)
    assert sorted(q.keys[:, 0].tolist()) == list(map(float, range(115, 125)))


def test_split_batchnorm_matches_per_group_batchnorm():
    torch.manual_seed(0)
    g, n, c = 4, 16, 3
    x = torch.randn(n, c, 5, 5) * 3 + 1
    sbn = SplitBatchNorm2d(c, g)
    with torch.no_grad():
        sbn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        sbn.bias.copy_(torch.tensor([0.0, -1.0, 0.3]))
    out = sbn(x)
    ref = torch.empty_like(x)
    means, vars_ = [], []
    m = n // g
    for grp in range(g):  # group grp holds the contiguous slice grp * m ... (grp + 1) * m - 1 (rank grp's samples)
        xs = x[grp * m : (grp + 1) * m]
        mu, var = xs.mean((0, 2, 3)), xs.var((0, 2, 3), unbiased=False)
        ref[grp * m : (grp + 1) * m] = (xs - mu[None, :, None, None]) / torch.sqrt(
            var[None, :, None, None] + sbn.eps
        ) * sbn.weight[None, :, None, None] + sbn.bias[None, :, None, None]
        means.append(mu)
        vars_.append(xs.var((0, 2, 3), unbiased=True))
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(sbn.running_mean, 0.1 * torch.stack(means).mean(0), atol=1e-6)
    assert torch.allclose(sbn.running_var, 0.9 + 0.1 * torch.stack(vars_).mean(0), atol=1e-5)
    # channels-last input, evaluation mode and the state dict behave like a plain BatchNorm2d
    assert torch.allclose(sbn.train()(x.contiguous(memory_format=torch.channels_last)), sbn(x), atol=1e-5)
    assert sbn(x.contiguous(memory_format=torch.channels_last)).is_contiguous(memory_format=torch.channels_last)
    plain = nn.BatchNorm2d(c)
    plain.load_state_dict(sbn.state_dict())
    assert torch.allclose(sbn.eval()(x), plain.eval()(x), atol=1e-6)


@pytest.mark.parametrize("path", ["one-call", "per-group", "view"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "2d"])
def test_split_batchnorm_gradients_match_one_bn_call_per_group(layout, path, monkeypatch):
    """The three implementations (one rearranged BN call, a call per group, statistics on a grouped view)
    against the direct definition (a BN call on each group's slice): outputs, gradients of the input,
    weight and bias, running statistics, output memory format."""
    from cssl_bench.nn.norm import SplitBatchNorm1d

    monkeypatch.setattr(SplitBatchNorm2d, "PATH", path)
    torch.manual_seed(0)
    g, n, c = 4, 16, 6
    x0 = torch.randn(n, c) * 2 + 1 if layout == "2d" else torch.randn(n, c, 5, 3) * 2 + 1
    if layout == "channels_last":
        x0 = x0.contiguous(memory_format=torch.channels_last)
    sbn = (SplitBatchNorm1d if layout == "2d" else SplitBatchNorm2d)(c, g)
    with torch.no_grad():
        sbn.weight.copy_(torch.rand(c) + 0.5)
        sbn.bias.copy_(torch.randn(c))
    w_ref, b_ref = sbn.weight.detach().clone().requires_grad_(), sbn.bias.detach().clone().requires_grad_()
    rm, rv = torch.zeros(c), torch.ones(c)
    x_ref, x = x0.clone().requires_grad_(), x0.clone().requires_grad_()
    ref = torch.cat(
        [
            F.batch_norm(ch, r1, r2, w_ref, b_ref, True, 0.1, sbn.eps)
            for ch, r1, r2 in ((ch, rm.clone(), rv.clone()) for ch in x_ref.chunk(g))
        ]
    )
    out = sbn(x)
    upstream = torch.randn_like(ref)
    # an in-place op on the output (ResNet's ReLU): the output must not be a view that autograd re-copies
    assert out._base is None
    (F.relu(ref) * upstream).sum().backward()
    (F.relu(out, inplace=True) * upstream).sum().backward()
    assert torch.allclose(out, F.relu(ref), atol=1e-5)
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-5)
    assert torch.allclose(sbn.weight.grad, w_ref.grad, atol=1e-4) and torch.allclose(
        sbn.bias.grad, b_ref.grad, atol=1e-4
    )
    dims = (0,) if layout == "2d" else (0, 2, 3)
    means = torch.stack([ch.mean(dims) for ch in x0.chunk(g)]).mean(0)
    assert torch.allclose(sbn.running_mean, 0.1 * means, atol=1e-6)
    unbiased = torch.stack([ch.var(dims, unbiased=True) for ch in x0.chunk(g)]).mean(0)
    assert torch.allclose(sbn.running_var, 0.9 + 0.1 * unbiased, atol=1e-5)
    if layout == "channels_last":
        assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(
    "shape, calls",
    [
        ((16, 8, 4, 4), 1),  # 512 elements per group: one call
        ((128, 2, 2, 2), 1),  # 32 samples, 256 elements per group: one call
        ((8, 4, 256, 256), 4),
    ],
)  # 2 samples but 2^19 elements per group: a call each
def test_split_batchnorm_chooses_its_path_by_group_size(shape, calls, monkeypatch):
    """On a CPU: one rearranged BN call below GROUP_CALL_MIN_ELEMENTS per group, a call per group from it
    (a GPU input takes the grouped-view statistics, which make no BN call)."""
    seen = []
    real = F.batch_norm
    monkeypatch.setattr(F, "batch_norm", lambda *a, **k: seen.append(a[0].shape) or real(*a, **k))
    x = torch.randn(*shape).contiguous(memory_format=torch.channels_last)
    y = SplitBatchNorm2d(shape[1], 4)(x)
    assert len(seen) == calls and y.shape == x.shape and y.is_contiguous(memory_format=torch.channels_last)
    if calls == 1:
        assert seen[0] == (shape[0] // 4, shape[1] * 4, *shape[2:])


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "2d"])
def test_group_stats_bn_backward_passes_gradcheck(layout):
    """The view path's hand-written backward against finite differences (float64): input, weight and bias."""
    from cssl_bench.nn.norm import _GroupStatsBN

    torch.manual_seed(0)
    x = torch.randn(8, 3, dtype=torch.float64) if layout == "2d" else torch.randn(8, 3, 3, 2, dtype=torch.float64)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.rand(3, dtype=torch.float64) + 0.5
    b = torch.randn(3, dtype=torch.float64)
    args = tuple(t.requires_grad_() for t in (x * 2 + 1, w, b))
    assert args[0].is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last") or layout == "2d"
    assert torch.autograd.gradcheck(lambda x, w, b: _GroupStatsBN.apply(x, w, b, 4, 1e-5)[0], args)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_split_batchnorm_view_path_in_bf16_accumulates_in_fp32(layout, monkeypatch):
    """bf16 activations (autocast): the grouped-view statistics accumulate in fp32, so output and input
    gradient match the fp32 per-group reference to bf16 precision, with a large mean (mean/std = 20)
    that a bf16 accumulation of x^2 would lose."""
    monkeypatch.setattr(SplitBatchNorm2d, "PATH", "view")
    torch.manual_seed(0)
    x0 = torch.randn(16, 6, 6, 6) + 20.0
    if layout == "channels_last":
        x0 = x0.contiguous(memory_format=torch.channels_last)
    sbn = SplitBatchNorm2d(6, 4)
    x = x0.to(torch.bfloat16).requires_grad_()
    xr = x.detach().float().requires_grad_()
    up = torch.randn(x0.shape)
    y = sbn(x)
    assert y.dtype == torch.bfloat16
    ref = torch.cat([F.batch_norm(ch, None, None, sbn.weight, sbn.bias, True, 0.1, sbn.eps) for ch in xr.chunk(4)])
    (y.float() * up).sum().backward()
    (ref * up).sum().backward()
    assert (y.float() - ref).abs().max() < 0.02  # bf16 output rounding: 2^-8 of values up to ~3
    assert (x.grad.float() - xr.grad).abs().max() < 0.01 * xr.grad.abs().max()


def test_shuffled_forward_restores_the_order_but_mixes_bn_groups():
    torch.manual_seed(0)
    x = torch.randn(16, 3)
    assert torch.equal(shuffled_forward(lambda v: v * 2, x), x * 2)
    seen = []
    shuffled_forward(lambda v: seen.append(v.clone()) or v, x)
    assert not torch.equal(seen[0], x) and torch.equal(seen[0].sort(0).values, x.sort(0).values)
    # with per-group BN the result depends on which samples share a group: shuffling changes it
    net = split_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)), 4)
    assert isinstance(net[1], SplitBatchNorm2d)
    imgs = torch.randn(16, 3, 2, 2)
    with torch.no_grad():
        assert not torch.allclose(shuffled_forward(net, imgs), net(imgs))


def test_lr_schedules_against_the_official_formulas():
    """SwAV (main_swav.py, 800 epochs at batch 4096): warm-up linspace(0.3, 4.8) over 10 epochs, then
    0.0048 + 0.5 (4.8 - 0.0048)(1 + cos(pi t / T)); MoCo v2 / SimSiam (main_moco.py, main_simsiam.py): the
    cosine of the epoch index, set at each epoch start. The CPU scales keep per-step curves ending at 0."""
    sw = load_recipe("swav", "paper")
    assert sw.lr == pytest.approx(4.8) and (sw.optim.warmup_start, sw.optim.final_lr) == (0.0625, 0.001)
    assert sw.lr * lr_factor(sw, 0) == pytest.approx(0.3) and sw.lr * lr_factor(sw, 5) == pytest.approx(0.3 + 4.5 / 2)
    for e in (10, 100, 405.5, 800):
        t = (e - 10) / 790
        assert sw.lr * lr_factor(sw, e) == pytest.approx(0.0048 + 0.5 * (4.8 - 0.0048) * (1 + math.cos(math.pi * t)))
    for name in ("moco-v2", "simsiam", "simsiam-optimal"):
        r = load_recipe(name, "paper")
        assert r.optim.schedule_unit == "epoch"
        for e in (0.0, 0.99, 37.5, r.train.epochs - 0.1):
            assert lr_factor(r, e) == pytest.approx(0.5 * (1 + math.cos(math.pi * math.floor(e) / r.train.epochs)))
    tiny = load_recipe("moco-v2", "tiny")
    assert tiny.optim.schedule_unit == "iteration" and lr_factor(tiny, 0.5) == pytest.approx(
        0.5 * (1 + math.cos(math.pi * 0.5 / tiny.train.epochs))
    )
    assert load_recipe("swav", "small").optim.final_lr == 0.0
    # the new keys stay out of the hash at their defaults; setting one changes it
    base = load_recipe("simclr", "tiny")
    assert "schedule_unit" not in base.hash_dict()["optim"] and "final_lr" not in base.hash_dict()["optim"]
    assert load_recipe("simclr", "tiny", sets=["optim.final_lr=0.01"]).hash() != base.hash()
    for bad, msg in (
        ("optim.final_lr=1.5", "fraction of the peak"),
        ("optim.warmup_start=-0.1", "fraction of the peak"),
        ("optim.schedule_unit=step", "optim.schedule_unit must be one of iteration, epoch"),
    ):
        with pytest.raises(UserError, match=msg):
            load_recipe("simclr", "tiny", sets=[bad])


def test_moco_versions_heads_and_recipes():
    v1 = build_method(load_recipe("moco-v1", "paper"))
    assert isinstance(v1.head, nn.Linear) and v1.head.out_features == 128 and v1.p.temperature == 0.07
    assert v1.p.queue_size == 65536 and v1.p.momentum == 0.999
    r1 = load_recipe("moco-v1", "paper")
    assert r1.optim.schedule == "multistep" and r1.optim.milestones == [120, 160] and r1.train.epochs == 200
    assert r1.lr == pytest.approx(0.03)
    assert (
        lr_factor(r1, 119.9) == 1.0
        and lr_factor(r1, 130) == pytest.approx(0.1)
        and lr_factor(r1, 170) == pytest.approx(0.01)
    )
    assert r1.augment.blur_p == 0.0 and r1.augment.color["hue"] == 0.4
    v2 = build_method(load_recipe("moco-v2", "paper"))
    linears = [m for m in v2.head if isinstance(m, nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(2048, 2048), (2048, 128)]
    assert v2.p.temperature == 0.2 and load_recipe("moco-v2", "paper").optim.schedule == "cosine"
    assert load_recipe("moco-v2", "paper").augment.blur_p == 0.5
    bns = [m for m in v2.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(isinstance(m, SplitBatchNorm2d) and m.splits == 8 for m in bns)
    assert all(isinstance(m, SplitBatchNorm2d) for m in v2.backbone_k.modules() if isinstance(m, nn.BatchNorm2d))
    assert load_recipe("moco-rot", "tiny").augment.rotation == "independent"
    assert load_recipe("moco-rot-same", "tiny").augment.rotation == "same"


@pytest.mark.parametrize("symmetric,reduction", [(False, "sum"), (True, "sum"), (True, "mean")])
def test_moco_loss_and_queue_update(symmetric, reduction):
    torch.manual_seed(0)
    recipe = load_recipe(
        "moco-v2",
        "tiny",
        sets=SMALL
        + [
            "params.bn_splits=1",
            "params.queue_size=40",
            f"params.symmetric={str(symmetric).lower()}",
            f"params.symmetric_reduction={reduction}",
        ],
    )
    m = build_method(recipe)
    views, labels = batch_of_views(recipe, 16)
    queue0 = m.queue.keys.clone()
    with torch.no_grad():  # plain BN is permutation-equivariant: keys do not depend on the shuffle
        q1, q2 = m.query(views["v1"]), m.query(views["v2"])
        k1 = F.normalize(m.head_k(m.backbone_k(views["v1"])), dim=1)
        k2 = F.normalize(m.head_k(m.backbone_k(views["v2"])), dim=1)
    expected = losses.info_nce(q1, k2, queue0, 0.2)
    if symmetric:
        # the official MoCo code's symmetric option sums the two directions (loss_12 + loss_21)
        expected = (expected + losses.info_nce(q2, k1, queue0, 0.2)) * (0.5 if reduction == "mean" else 1.0)
    out = m.loss(views, labels)
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-4)
    pushed = torch.cat([k2, k1]) if symmetric else k2
    assert torch.allclose(m.queue.keys[: len(pushed)], pushed, atol=1e-5)
    assert torch.equal(m.queue.keys[len(pushed) :], queue0[len(pushed) :])
    out["loss"].backward()
    assert m.head[0].weight.grad is not None and all(p.grad is None for p in m.head_k.parameters())


def test_moco_symmetric_reduction_is_checked():
    with pytest.raises(UserError, match="symmetric_reduction"):
        build_method(load_recipe("moco-v2", "tiny", sets=SMALL + ["params.symmetric_reduction=avg"]))


# --------------------------------------------------------------------------------------------------
# BYOL


def test_moco_shortcut_statistics_on_hand_made_keys():
    """eval.diagnostics.moco_shortcut_stats: with keys equal to their queries every positive wins (instance
    discrimination); with every current key near one direction c and the queue near an older direction c', any key
    of the batch outranks the whole queue while the positive does not beat the other keys (the shortcut)."""
    q = torch.eye(4, 8)
    ok = diagnostics.moco_shortcut_stats(q, q.clone(), -torch.eye(8)[:3])
    assert ok["positive_beats_batch"] == 1.0 and ok["positive_beats_queue"] == 1.0 and ok["cos_positive"] == 1.0
    assert ok["cos_other_in_batch"] == 0.0 and ok["chance"] == 0.25
    c, c_old = torch.tensor([1.0, 0, 0]), torch.tensor([0.8, 0.6, 0])
    q = F.normalize(c + 0.01 * torch.tensor([[0, 0, 1.0], [0, 0, -1.0], [0, 0.5, 0], [0, -0.5, 0]]), dim=1)
    k = q.roll(1, 0)  # every key is near c, none is its query's nearest
    cut = diagnostics.moco_shortcut_stats(q, k, c_old.expand(5, 3))
    assert cut["positive_beats_batch"] == 0.0 and cut["other_beats_queue"] == 1.0 and cut["positive_beats_queue"] == 1.0


def test_moco_shortcut_runs_on_a_moco_run_and_refuses_others(cli, tmp_path, small_args):
    out = tmp_path / "moco"
    p = cli(
        "pretrain",
        "moco-v2",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--out",
        out,
        "--quiet",
        *small_args,
        "--set",
        "params.queue_size=64",
    )
    assert p.returncode == 0, p.stderr[-2000:]
    row = diagnostics.measure_moco_shortcut(out, 16)
    assert row["method"] == "moco-v2" and 0 < row["z_std"] <= 1 and row["chance"] == 1 / 16
    assert all(0 <= row[k] <= 1 for k in ("positive_beats_batch", "positive_beats_queue", "other_beats_queue"))
    sup = tmp_path / "sup"
    assert cli("pretrain", "supervised", "--epochs", "0", "--out", sup, "--quiet", *small_args).returncode == 0
    with pytest.raises(UserError, match="not MoCo"):
        diagnostics.measure_moco_shortcut(sup, 16)


def test_swav_span_statistics_on_hand_made_embeddings(cli, tmp_path, small_args):
    """eval.diagnostics.prototype_span_stats: embeddings inside the prototypes' span keep all their norm there,
    embeddings orthogonal to every prototype none (scores 0: uniform predictions); end to end on a SwAV run."""
    protos = torch.eye(4, 6)
    inside = diagnostics.prototype_span_stats(
        F.normalize(torch.tensor([[1.0, 1, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0]]), dim=1), protos
    )
    assert (
        inside["norm_in_span"] == pytest.approx(1.0) and inside["prototype_cos"] == 0.0 and inside["n_prototypes"] == 4
    )
    outside = diagnostics.prototype_span_stats(torch.tensor([[0.0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 1]]), protos)
    assert outside["norm_in_span"] == pytest.approx(0.0, abs=1e-6) and outside["abs_score"] == 0.0
    assert outside["score_std"] == 0.0
    # prototypes in the x-y plane leave z's third axis: embeddings on +-e3 sit on that weakest direction, along one line
    plane = F.normalize(torch.tensor([[1.0, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0], [1, 1, 0]]), dim=1)
    hidden = diagnostics.prototype_span_stats(torch.tensor([[0.0, 0, 1], [0, 0, -1], [0, 0, 1], [0, 0, -1]]), plane)
    assert hidden["weak_sv"] == pytest.approx(0.0, abs=1e-6) and hidden["median_sv"] > 1.0
    assert hidden["energy_on_weakest"] == pytest.approx(1.0) and hidden["top_direction_share"] == pytest.approx(1.0)
    spread = diagnostics.prototype_span_stats(torch.eye(3), plane)  # one embedding per axis: 1/3 on each
    assert spread["energy_on_weakest"] == pytest.approx(1 / 3) and spread["top_direction_share"] == pytest.approx(0.5)
    out = tmp_path / "swav"
    p = cli("pretrain", "swav", "--epochs", "0", "--out", out, "--quiet", *small_args)
    assert p.returncode == 0, p.stderr[-2000:]
    row = diagnostics.measure_prototype_span(out, 16)
    assert row["n_prototypes"] == 100 and 0 < row["norm_in_span"] <= 1 + 1e-6


def test_instance_retrieval_on_hand_made_features_and_a_run(cli, tmp_path, small_args):
    """eval.diagnostics: top-1 retrieval of an image's second view among all second views; exact on hand-made
    features (2 of 3 found), and end to end on a run of a recipe without two views (supervised)."""
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.2]])
    b = torch.tensor([[1.0, 0.1], [0.1, 1.0], [-1.0, 0.0]])  # row 2's nearest second view is row 0's (cos .995)
    assert diagnostics.instance_retrieval_top1(a, b) == pytest.approx(2 / 3)
    out = tmp_path / "sup"
    assert cli("pretrain", "supervised", "--epochs", "0", "--out", out, "--quiet", *small_args).returncode == 0
    row = diagnostics.measure_instance_retrieval(out, 32)
    assert row["method"] == "supervised" and row["chance"] == 1 / 32 and 0 <= row["instance_top1"] <= 1


def test_byol_heads_recipe_and_lars_exclusions():
    r = load_recipe("byol", "paper")
    m = build_method(r)
    for net in (m.projector, m.predictor):
        kinds = [type(x).__name__ for x in net]
        assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
        assert net[0].out_features == 4096 and net[3].out_features == 256
    assert r.optim.name == "lars" and r.optim.exclude_bn_bias and r.optim.weight_decay == 1.5e-6
    assert r.lr == pytest.approx(0.2 * 4096 / 256)
    a = r.augment
    assert (a.blur_p, a.blur_p2, a.solarize_p, a.solarize_p2) == (1.0, 0.1, 0.0, 0.2)
    vr = build_view_recipe(
        load_recipe("byol", "tiny", sets=["augment.blur_p=1.0", "augment.blur_p2=0.1", "augment.solarize_p2=0.2"])
    )
    assert [s.name for s in vr.first.steps][-1] == "blur" and vr.first.steps[-1].p == 1.0
    assert [(s.name, s.p) for s in vr.second.steps[-2:]] == [("blur", 0.1), ("solarize", 0.2)]
    # BN and bias: no weight decay, and timm's LARS skips the trust ratio for groups without weight decay
    groups = param_groups(m, r)
    for g in groups:
        assert all((p.ndim <= 1) == (g["weight_decay"] == 0.0) for p in g["params"])
    torch.manual_seed(0)
    tiny = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    opt = build_optimizer(tiny, r)
    for p in tiny.parameters():
        p.grad = torch.full_like(p, 0.5)
    before = {n: p.clone() for n, p in tiny.named_parameters()}
    opt.step()
    lr = r.lr
    for name, p in tiny.named_parameters():
        delta = before[name] - p
        if p.ndim <= 1:  # plain SGD step: lr * grad
            assert torch.allclose(delta, torch.full_like(p, lr * 0.5), atol=1e-5), name
        else:  # adapted: trust * |w| / (|g| + wd |w|) scales the step
            w, g = before[name].norm(), torch.full_like(p, 0.5).norm()
            trust = 0.001 * w / (g + 1.5e-6 * w)
            assert torch.allclose(delta, lr * trust * (0.5 + 1.5e-6 * before[name]), rtol=1e-4), name
    # a LARS recipe without weight decay still adapts its weights (timm's Lars alone would fall back to SGD)
    r0 = load_recipe("byol", "paper", sets=["optim.weight_decay=0.0"])
    opt = build_optimizer(tiny, r0)
    for p in tiny.parameters():
        p.grad = torch.full_like(p, 0.5)
    w = tiny[0].weight.detach().clone()
    opt.step()
    trust = 0.001 * w.norm() / torch.full_like(w, 0.5).norm()
    assert torch.allclose(w - tiny[0].weight.detach(), r0.lr * trust * 0.5 * torch.ones_like(w), rtol=1e-4)


def test_byol_target_does_not_get_gradients():
    recipe = load_recipe("byol", "tiny", sets=SMALL)
    m = build_method(recipe)
    views, labels = batch_of_views(recipe, 8)
    m.loss(views, labels)["loss"].backward()
    assert m.predictor[0].weight.grad is not None
    assert all(p.grad is None for p in list(m.backbone_t.parameters()) + list(m.projector_t.parameters()))


# --------------------------------------------------------------------------------------------------
# SwAV


def swav(sets=()):
    # multi-crop, the paper's views (the budget recipe trains on two views; docs/protocols.md, section 6)
    recipe = load_recipe("swav", "tiny", sets=SMALL + ["augment.views=multicrop"] + list(sets))
    return recipe, build_method(recipe)


def test_swav_prototypes_normalised_and_frozen_in_the_first_epoch():
    torch.manual_seed(0)
    recipe, m = swav()
    with torch.no_grad():
        m.prototypes.weight.mul_(3.0)
    views, labels = batch_of_views(recipe, 16)
    opt = build_optimizer(m, recipe)
    set_lr(opt, recipe, 0.0)
    for epoch in (0, 1):
        m.on_epoch_start(epoch)
        out = m.loss(views, labels)
        assert torch.allclose(m.prototypes.weight.norm(dim=1), torch.ones(m.p.n_prototypes), atol=1e-5)
        before = m.prototypes.weight.detach().clone()
        head_before = m.projector[0].weight.detach().clone()
        opt.zero_grad()
        out["loss"].backward()
        m.after_backward(epoch)
        opt.step()
        assert not torch.equal(m.projector[0].weight, head_before)  # the rest learns in both epochs
        if epoch == 0:
            assert torch.equal(m.prototypes.weight, before)  # frozen
        else:
            assert not torch.equal(m.prototypes.weight, before)


def test_swav_orthogonal_prototypes_give_every_unit_embedding_the_same_score_energy():
    # stacked orthonormal bases: C^T C = (K / dim) I, so sum_k (z.c_k)^2 = K / dim for any unit z (no direction in
    # which SwAV's predictions can become uniform); unit rows, so the per-step normalisation keeps them
    torch.manual_seed(0)
    recipe, m = swav(["params.n_prototypes=384", "params.prototypes_init=orthogonal"])
    c = m.prototypes.weight.detach()
    assert torch.allclose(c.T @ c, 3 * torch.eye(128), atol=1e-4)
    assert torch.allclose(c.norm(dim=1), torch.ones(384), atol=1e-5)
    z = F.normalize(torch.randn(50, 128), dim=1)
    assert torch.allclose(((z @ c.T) ** 2).sum(1), torch.full((50,), 3.0), atol=1e-4)
    _, r = swav()  # the default stays nn.Linear's: not orthogonal
    w = F.normalize(r.prototypes.weight.detach(), dim=1)
    assert not torch.allclose(w.T @ w, (w.shape[0] / 128) * torch.eye(128), atol=0.1)
    with pytest.raises(UserError, match="multiple of dim"):
        swav(["params.n_prototypes=300", "params.prototypes_init=orthogonal"])
    with pytest.raises(UserError, match="random or orthogonal"):
        swav(["params.prototypes_init=spread"])


def test_swav_out_bn_standardises_the_projection_before_the_normalisation():
    torch.manual_seed(0)
    recipe, m = swav(["params.out_bn=true"])
    bn = m.projector[-1]
    assert isinstance(bn, torch.nn.BatchNorm1d) and not bn.affine
    m.train()
    y = m.projector(torch.randn(64, m.feat_dim) * 5 + 2)
    assert torch.allclose(y.mean(0), torch.zeros(y.shape[1]), atol=1e-4)
    assert torch.allclose(y.var(0, unbiased=False), torch.ones(y.shape[1]), atol=1e-2)
    _, plain = swav()
    assert isinstance(plain.projector[-1], torch.nn.Linear)


def test_swav_codes_from_the_large_crops_only(monkeypatch):
    torch.manual_seed(0)
    recipe, m = swav()
    views, labels = batch_of_views(recipe, 8)
    assert sorted(views) == ["g0", "g1", "l0", "l1", "l2", "l3", "l4", "l5"]
    assert views["g0"].shape[-1] == 32 and views["l0"].shape[-1] == 14
    calls, seen = [], {}
    real_sinkhorn, real_loss = losses.sinkhorn, losses.swav_multicrop_loss
    monkeypatch.setattr(losses, "sinkhorn", lambda s, *a, **k: calls.append(s.clone()) or real_sinkhorn(s, *a, **k))
    monkeypatch.setattr(
        losses, "swav_multicrop_loss", lambda sc, co, t: seen.update(scores=sc, codes=co) or real_loss(sc, co, t)
    )
    m.loss(views, labels)
    assert len(calls) == 2 and len(seen["codes"]) == 2 and len(seen["scores"]) == 8
    with torch.no_grad():  # the codes are those of g0 and g1, in that order
        for i, _name in enumerate(["g0", "g1"]):
            z = F.normalize(m.projector(m.backbone(torch.cat([views["g0"], views["g1"]]))), dim=1).chunk(2)[i]
            assert torch.allclose(calls[i], m.prototypes(z), atol=1e-4)


def test_swav_queue_joins_from_its_epoch(monkeypatch):
    torch.manual_seed(0)
    recipe, m = swav(["params.queue_length=16", "params.queue_start=1", "train.batch_size=8"])
    views, labels = batch_of_views(recipe, 8)
    sizes = []
    real = losses.sinkhorn
    monkeypatch.setattr(losses, "sinkhorn", lambda s, *a, **k: sizes.append(s.shape[0]) or real(s, *a, **k))
    m.on_epoch_start(0)
    m.loss(views, labels)
    assert m.queue.abs().sum() == 0 and sizes == [8, 8]  # before queue_start: no queue
    m.on_epoch_start(1)
    sizes.clear()
    m.loss(views, labels)
    m.loss(views, labels)  # the queue (16) fills after two batches of 8 ...
    assert sizes == [8, 8, 8, 8] and bool((m.queue[:, -1].abs().sum(1) > 0).all())
    sizes.clear()
    m.loss(views, labels)  # ... and then joins the Sinkhorn step
    assert sizes == [24, 24]


def test_swav_queue_is_split_across_ranks(monkeypatch):
    """As main_swav.py: the global queue_length, rounded down to a multiple of the global batch, is divided
    among the ranks, so the Sinkhorn step sees the same number of queued rows at any number of processes."""
    from cssl_bench.nn import distributed as D

    sets = ["params.queue_length=100", "train.batch_size=16"]
    assert swav(sets)[1].queue.shape[1] == 96
    monkeypatch.setattr(D, "world_size", lambda: 2)
    assert swav(sets)[1].queue.shape[1] == 48
    with pytest.raises(UserError, match="below the batch size"):
        swav(["params.queue_length=10", "train.batch_size=16"])


# --------------------------------------------------------------------------------------------------
# SimSiam


def test_simsiam_heads():
    m = build_method(load_recipe("simsiam", "paper"))
    proj = [type(x).__name__ for x in m.projector]
    assert proj == ["Linear", "BatchNorm1d", "ReLU"] * 2 + ["Linear", "BatchNorm1d"]
    linears = [x for x in m.projector if isinstance(x, nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(2048, 2048)] * 3
    assert all(lin.bias is None for lin in linears)
    assert not m.projector[-1].affine and all(
        b.affine for b in m.projector if isinstance(b, nn.BatchNorm1d) and b is not m.projector[-1]
    )
    assert [type(x).__name__ for x in m.predictor] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert (m.predictor[0].in_features, m.predictor[0].out_features, m.predictor[3].out_features) == (2048, 512, 2048)
    assert m.predictor[3].bias is not None
    # zero-init residual: the last BN of every residual block starts at 0
    last_bns = [blk.bn3.weight for layer in (m.backbone.layer1, m.backbone.layer4) for blk in layer]
    assert all(torch.count_nonzero(w) == 0 for w in last_bns)


def test_simsiam_stop_gradient_and_loss_value():
    torch.manual_seed(0)
    recipe = load_recipe("simsiam", "tiny", sets=SMALL)
    m = build_method(recipe)
    views, labels = batch_of_views(recipe, 8)
    z1 = m.projector(m.backbone(views["v1"]))
    z2 = m.projector(m.backbone(views["v2"]))
    p1, p2 = m.predictor(z1), m.predictor(z2)
    ref = -0.5 * (F.cosine_similarity(p1, z2.detach()).mean() + F.cosine_similarity(p2, z1.detach()).mean())
    out = m.loss(views, labels)
    assert out["loss"].item() == pytest.approx(ref.item(), rel=1e-5) and -1 <= out["loss"].item() <= 1


def test_simsiam_predictor_lr_fixed_and_weight_decay_on_all():
    r = load_recipe("simsiam", "paper")
    assert r.model.zero_init_residual and r.optim.fixed_lr == ["predictor"] and r.lr == pytest.approx(0.05)
    m = build_method(load_recipe("simsiam", "tiny"))
    rt = load_recipe("simsiam", "tiny")
    opt = build_optimizer(m, rt)
    assert all(g["weight_decay"] == 1e-4 for g in opt.param_groups)
    pred = {id(p) for p in m.predictor.parameters()}
    for epoch in (0.0, 0.5, 1.0, 1.7):
        set_lr(opt, rt, epoch)
        for g in opt.param_groups:
            ids = {id(p) for p in g["params"]}
            if ids <= pred:
                assert g["lr"] == pytest.approx(rt.lr)
            else:
                assert not ids & pred
                assert g["lr"] == pytest.approx(rt.lr * 0.5 * (1 + math.cos(math.pi * epoch / rt.train.epochs)))
    opt_r = load_recipe("simsiam-optimal", "paper")
    assert opt_r.optim.base_lr == 0.5 and opt_r.optim.weight_decay == 1e-5 and opt_r.optim.fixed_lr == ["predictor"]


# --------------------------------------------------------------------------------------------------
# every method learns


def restore_buffers(method, saved):
    """Put back the buffers that a loss call changes (queues), so two evaluations see the same negatives."""
    for name, b in method.named_buffers():
        if name in saved:
            b.copy_(saved[name])


@pytest.mark.parametrize("name", METHODS)
def test_loss_decreases_over_a_few_steps(name):
    torch.manual_seed(0)
    recipe = load_recipe(name, "tiny", sets=SMALL)
    m = build_method(recipe)
    views, labels = batch_of_views(recipe, 32)
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    queues = {n: b.clone() for n, b in m.named_buffers() if "queue" in n}

    def evaluate():
        restore_buffers(m, queues)
        torch.manual_seed(1)  # the same key shuffle
        with torch.no_grad():
            value = m.loss(views, labels)["loss"].item()
        restore_buffers(m, queues)
        return value

    first = evaluate()
    for _ in range(8):
        out = m.loss(views, labels)
        opt.zero_grad()
        out["loss"].backward()
        m.after_backward(1)  # past SwAV's frozen first epoch
        opt.step()
        if m.momentum_pairs:
            update_momentum_pairs(m.momentum_pairs, 0.9)
        restore_buffers(m, queues)
    last = evaluate()
    assert math.isfinite(last) and last < first - 0.01 * abs(first), (first, last)


def test_output_std_analytic_values_and_hand_reference():
    """SimSiam's collapse monitor (Fig. 2): 0 for a collapsed batch, 1/sqrt(D) for outputs spread uniformly over
    the sphere, and the per-channel sample std of the normalised rows, averaged, on a hand-computed case."""
    assert output_std(torch.ones(64, 16) * torch.randn(1, 16)).item() == pytest.approx(0.0, abs=1e-6)
    torch.manual_seed(0)
    assert output_std(torch.randn(20000, 64)).item() == pytest.approx(1 / 8, rel=0.01)
    # rows (3, 4), (4, 3), (0, 5) normalise to (.6, .8), (.8, .6), (0, 1); unbiased std of each column:
    col0 = math.sqrt(((0.6 - 1.4 / 3) ** 2 + (0.8 - 1.4 / 3) ** 2 + (0 - 1.4 / 3) ** 2) / 2)
    col1 = math.sqrt(((0.8 - 0.8) ** 2 + (0.6 - 0.8) ** 2 + (1.0 - 0.8) ** 2) / 2)
    z = torch.tensor([[3.0, 4.0], [4.0, 3.0], [0.0, 5.0]], requires_grad=True)
    got = output_std(z)
    assert got.item() == pytest.approx((col0 + col1) / 2, abs=1e-6) and not got.requires_grad


def _documented_embedding(name, m, views):
    """The output each method's ``z_std`` is documented to monitor, recomputed outside its loss."""
    if name.startswith("moco"):
        return m.query(views["v1"])
    if name == "swav":
        from cssl_bench.methods.swav import _crop_order

        if "v1" in views:  # the budget recipes' two views
            return m._embed([views["v1"], views["v2"]])[0]
        large, small = _crop_order(views)
        return m._embed([views[k] for k in large + small])[0]
    if name.startswith("looc"):
        return m.heads[0](m.backbone(views["q"]))
    return m.projector(m.backbone(views["v1"]))  # SimCLR, BYOL (online projection), SimSiam


@pytest.mark.parametrize("name", [n for n in METHODS if n != "supervised"])
def test_every_self_supervised_method_reports_the_output_std_of_its_embedding(name):
    """``z_std`` (logged in log.csv) is output_std of the method's embedding: the query / projection of the first
    view, LooC's invariant space. BN normalises in training mode, so recomputing the embedding gives the same
    values; the supervised recipe has no embedding and reports none."""
    torch.manual_seed(0)
    recipe = load_recipe(name, "tiny", sets=SMALL)
    m = build_method(recipe)
    views, labels = batch_of_views(recipe, 16)
    torch.manual_seed(1)
    out = m.loss(views, labels)
    with torch.no_grad():
        expected = output_std(_documented_embedding(name, m, views))
    assert 0 < out["z_std"].item() <= 1 and out["z_std"].item() == pytest.approx(expected.item(), rel=1e-4)
    sup = load_recipe("supervised", "tiny", sets=SMALL)
    assert "z_std" not in build_method(sup).loss(*batch_of_views(sup, 8))


@pytest.mark.slow
@pytest.mark.parametrize("name", METHODS)
def test_every_method_pretrains_through_the_cli(name, cli, tmp_path, small_args):
    out = tmp_path / "run"
    p = cli("pretrain", name, "--epochs", "1", "--batch-size", "64", "--out", out, "--quiet", *small_args)
    assert p.returncode == 0, p.stderr[-2000:]
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "complete" and info["method"] == name and info["steps_done"] == 10
    assert (out / "checkpoints" / "last.pt").exists()
    p = cli("probe", "knn", out, "--json", "--results", tmp_path / "res")
    assert p.returncode == 0, p.stderr[-2000:]
    assert 0 <= json.loads(p.stdout)[0]["value"] <= 100


def test_one_method_pretrains_through_the_cli(cli, tmp_path, small_args):
    """The fast guard of the slow test above: LooC (the most involved method) through the CLI."""
    out = tmp_path / "run"
    p = cli("pretrain", "looc++", "--epochs", "1", "--batch-size", "64", "--out", out, "--quiet", *small_args)
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads((out / "run.json").read_text())["status"] == "complete"


def test_head_bn_option_uses_split_bn_in_moco_and_looc_heads():
    """params.head_bn (on in the CPU budget recipes, off in the papers' recipes): the head's BN gets the same
    per-group statistics as the backbone's, LooC's hidden-layer features stop before the last Linear."""
    from cssl_bench.nn.norm import SplitBatchNorm1d

    moco = build_method(load_recipe("moco-v2", "tiny", {}, ["params.head_bn=true"]))
    bns = (nn.modules.batchnorm._BatchNorm,)
    assert [type(m) for m in moco.head if isinstance(m, bns)] == [SplitBatchNorm1d]
    assert not any(
        isinstance(m, bns) for m in build_method(load_recipe("moco-v2", "tiny", {}, ["params.head_bn=false"])).head
    )
    assert not load_recipe("moco-v2", "paper").params.get("head_bn", False)  # the paper's MoCo v2 head has no BN
    assert load_recipe("moco-v2", "tiny").params["head_bn"] and load_recipe("looc", "small").params["head_bn"]
    x = torch.randn(8, 5) * 4 + 2
    sbn = SplitBatchNorm1d(5, 2)
    ref = torch.cat([F.batch_norm(c, None, None, training=True) for c in x.chunk(2)])
    assert torch.allclose(sbn(x), ref, atol=1e-5)
    looc = build_method(load_recipe("looc", "tiny", {}, ["params.head_bn=true"]))
    views, labels = batch_of_views(looc.recipe, 8)
    looc.train()
    assert torch.isfinite(looc(views, labels)["loss"])
    looc.eval()
    with torch.no_grad():
        h = looc.features(views["q"], "head:0")
    assert h.shape == (8, looc.p.hidden) and (h >= 0).all()  # Linear-BN-ReLU: the hidden layer after its ReLU


def probe_top1(cli, run_dir, results, probe="knn", *extra):
    p = cli("probe", probe, run_dir, "--json", "--results", results, *extra)
    assert p.returncode == 0, p.stderr[-2000:]
    return next(r["value"] for r in json.loads(p.stdout) if r["metric"] == f"{probe}/top1")


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,sets,seeds",
    [
        ("simclr", (), (0, 1, 2)),
        ("moco-v2", ("params.symmetric=true", "params.symmetric_reduction=sum"), (0, 1, 2)),
        ("supervised", (), (0,)),
    ],
)
def test_tiny_gate_demo_methods_beat_random_init(name, sets, seeds, cli, tmp_path):
    """The tiny gate (the demo's two methods: SimCLR and SimSiam Table 4's symmetrised MoCo v2): on each of seeds
    0-2, kNN top-1 on the embedded test split above the higher of the two random-init baselines of the same seed
    (the epoch-0 network as initialised, and with its BN statistics re-estimated on the training images), with
    no collapse warning. The supervised row is the upper reference (labels), seed 0.
    Measured margins: benchmarks/results/learning_tiny.json (python benchmarks/learning.py --scale tiny)."""
    for seed in seeds:
        extra = [a for s in sets for a in ("--set", s)]
        trained, init = tmp_path / f"trained-s{seed}", tmp_path / f"init-s{seed}"
        p = cli("pretrain", name, "--out", trained, "--seed", str(seed), *extra)
        assert p.returncode == 0, p.stderr[-2000:]
        assert "collapsed" not in p.stderr, p.stderr[-2000:]
        p = cli("pretrain", name, "--out", init, "--seed", str(seed), "--epochs", "0", "--quiet", *extra)
        assert p.returncode == 0, p.stderr[-2000:]
        best_init = max(
            probe_top1(cli, init, tmp_path / "res"), probe_top1(cli, init, tmp_path / "res", "knn", "--bn-data")
        )
        ours = probe_top1(cli, trained, tmp_path / "res")
        assert ours > best_init, (name, seed, ours, best_init)


def test_paper_recipes_synchronise_bn_except_moco():
    """The official SimCLR, BYOL, SwAV and SimSiam runs normalise over the global batch (SyncBN); MoCo and LooC
    shuffle BN instead, which SyncBN would undo. One process is unaffected (distribute() keeps plain BN)."""
    for name in ("simclr", "byol", "swav", "simsiam", "simsiam-optimal"):
        assert load_recipe(name, "paper").model.sync_bn, name
        assert not load_recipe(name, "small").model.sync_bn, name
    for name in ("moco-v1", "moco-v2", "moco-rot", "moco-rot-same", "looc"):
        assert not load_recipe(name, "paper").model.sync_bn, name
