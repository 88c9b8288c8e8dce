"""Unit tests of the evaluation pieces, against hand computations (no pretraining)."""

import math

import numpy as np
import pytest
import torch

from cssl_bench import UserError
from cssl_bench.config import Recipe
from cssl_bench.data import corruptions as C
from cssl_bench.data.datasets import ArraySource
from cssl_bench.eval.fewshot import FewShotProtocol, fewshot_eval, format_ci, mean_ci95, sample_kshot
from cssl_bench.eval.knn import topk_accuracy
from cssl_bench.eval.linear import fit_linear, get_protocol
from cssl_bench.eval.objectnet import _ALIASES, ON13, restricted_scores
from cssl_bench.eval.probes import RelabelledSource, class_columns, subset
from cssl_bench.eval.rotation import RotatedSource


def _source(n=6, size=8, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    return ArraySource("toy", imgs, np.arange(n) % classes, [f"c{i}" for i in range(classes)])


# ---------------------------------------------------------------------------------------------- rotation


def test_rotated_source_labels_and_images_agree():
    src = _source(n=5)
    rot = RotatedSource(src)
    assert len(rot) == 20 and rot.classes == ["0", "90", "180", "270"]
    assert list(rot.labels[:8]) == [0, 1, 2, 3, 0, 1, 2, 3]
    for j in range(len(rot)):
        img, label = rot[j]
        assert label == j % 4
        # rotating back by the labelled angle recovers the original image
        assert torch.equal(torch.rot90(img, -label, dims=(-2, -1)), src.image(j // 4))
        # and no other angle does (the random images have no rotational symmetry)
        for other in {0, 1, 2, 3} - {label}:
            assert not torch.equal(torch.rot90(img, -other, dims=(-2, -1)), src.image(j // 4))


def test_rotation_is_counter_clockwise_by_label_quarter_turns():
    src = _source(n=1, size=4)
    orig = src.image(0)
    img90 = RotatedSource(src).image(1)
    w = orig.shape[-1]
    for r in range(4):
        for c in range(4):  # a counter-clockwise quarter turn moves pixel (r, c) to (W-1-c, r)
            assert torch.equal(img90[:, w - 1 - c, r], orig[:, r, c])


# ---------------------------------------------------------------------------------------------- few-shot


def test_kshot_draws_exactly_k_per_class_and_is_reproducible():
    labels = np.repeat(np.arange(7), 13)
    np.random.default_rng(1).shuffle(labels)
    for k in (1, 5, 10):
        idx = sample_kshot(labels, k, np.random.default_rng([0, k, 0]))
        assert len(idx) == len(set(idx.tolist())) == 7 * k
        assert np.bincount(labels[idx], minlength=7).tolist() == [k] * 7
        again = sample_kshot(labels, k, np.random.default_rng([0, k, 0]))
        assert np.array_equal(idx, again)
        other = sample_kshot(labels, k, np.random.default_rng([0, k, 1]))
        assert not np.array_equal(idx, other)


def test_kshot_refuses_classes_with_too_few_images():
    with pytest.raises(UserError, match="fewer than 5 shots"):
        sample_kshot(np.array([0] * 10 + [1] * 3), 5, np.random.default_rng(0))


def test_ci95_against_hand_computation():
    vals = [1.0, 2.0, 3.0, 4.0]
    s = math.sqrt(sum((v - 2.5) ** 2 for v in vals) / 3)  # sample std 1.29099
    mean, half = mean_ci95(vals, "t")
    assert mean == pytest.approx(2.5)
    assert half == pytest.approx(3.182446305 * s / 2, rel=1e-6)  # t_{0.975, 3} = 3.1824463
    assert mean_ci95(vals, "normal")[1] == pytest.approx(1.96 * s / 2)
    assert mean_ci95([3.0], "t") == (3.0, 0.0)
    assert format_ci(70.94, 0.26) == "70.9 (±0.3)"


def test_fewshot_eval_is_deterministic_and_learns_separable_features():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=g) * 3
    ytr, yte = torch.arange(200) % 4, torch.arange(80) % 4
    ftr = centres[ytr] + 0.3 * torch.randn(200, 16, generator=g)
    fte = centres[yte] + 0.3 * torch.randn(80, 16, generator=g)
    p = FewShotProtocol(shots=[1, 5], trials=3, seed=0)
    a = fewshot_eval(ftr, ytr, fte, yte, p)
    assert sorted(a) == [1, 5] and all(len(v) == 3 for v in a.values())
    assert min(a[5]) == 100.0
    assert a == fewshot_eval(ftr, ytr, fte, yte, p)


# ---------------------------------------------------------------------------------------------- corruptions


def test_corruption_names_and_groups():
    assert len(C.CORRUPTIONS) == 15 and len(set(C.CORRUPTIONS)) == 15
    assert C.GROUPS["noise"] == ("gaussian_noise", "shot_noise", "impulse_noise")
    assert C.GROUPS["weather"] == ("snow", "frost", "fog", "brightness")
    assert C.parse_corruptions("zoom,noise") == ["gaussian_noise", "shot_noise", "impulse_noise", "zoom_blur"]
    assert C.parse_corruptions(None) == list(C.CORRUPTIONS)
    assert C.parse_severities("4-5") == [4, 5] and C.parse_severities("5,1") == [1, 5]
    with pytest.raises(UserError):
        C.parse_corruptions("rain")
    with pytest.raises(UserError):
        C.parse_severities("6")


def test_group_means_against_hand_computation():
    # accuracy 10 * (index of the corruption) + severity: every mean is computable by hand
    acc = {(c, s): 10.0 * i + s for i, c in enumerate(C.CORRUPTIONS) for s in C.SEVERITIES}
    m = C.group_means(acc)
    assert m["noise"] == pytest.approx(10 * 1 + 3)  # corruptions 0..2, mean severity 3
    assert m["blur"] == pytest.approx(10 * 4.5 + 3)  # 3..6
    assert m["weather"] == pytest.approx(10 * 8.5 + 3)  # 7..10
    assert m["digital"] == pytest.approx(10 * 12.5 + 3)  # 11..14
    assert m["all"] == pytest.approx(10 * 7 + 3)  # mean over 15 x 5
    assert m["d>3"] == pytest.approx(10 * 7 + 4.5)  # severities 4 and 5 only
    # a subset: means are over what was evaluated, absent groups are left out
    part = {("gaussian_noise", 4): 40.0, ("gaussian_noise", 5): 20.0, ("shot_noise", 1): 90.0, ("fog", 5): 10.0}
    m = C.group_means(part)
    assert m == pytest.approx({"noise": 50.0, "weather": 10.0, "all": 40.0, "d>3": 70.0 / 3})


def test_every_corruption_is_deterministic_on_32px_images():
    img = _source(n=1, size=32).image(0)
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    for c in C.CORRUPTIONS:
        a = C.corrupt_image(img, c, 5, seed=0, index=3)
        assert a.shape == img.shape and a.dtype == torch.uint8
        assert torch.equal(a, C.corrupt_image(img, c, 5, seed=0, index=3)), c
        assert not torch.equal(a, img), c
    assert np.array_equal(np.random.get_state()[1], before)  # the global RNG is left as it was
    # random corruptions depend on the seed and on the image index
    a = C.corrupt_image(img, "gaussian_noise", 3, seed=0, index=0)
    assert not torch.equal(a, C.corrupt_image(img, "gaussian_noise", 3, seed=1, index=0))
    assert not torch.equal(a, C.corrupt_image(img, "gaussian_noise", 3, seed=0, index=1))


def test_corrupted_source_is_order_independent_and_cache_round_trips(tmp_path):
    src = _source(n=4, size=32)
    cs = C.CorruptedSource(src, "shot_noise", 2, seed=7)
    alone = cs.image(3)
    for i in range(3):
        cs.image(i)
    assert torch.equal(cs.image(3), alone)
    assert np.array_equal(cs.labels, src.labels) and cs.classes == src.classes
    cached = C.cached_corrupted(cs, {"k": 1}, tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 1
    again = C.cached_corrupted(cs, {"k": 1}, tmp_path)
    for i in range(4):
        assert torch.equal(cached.image(i), cs.image(i)) and torch.equal(again.image(i), cs.image(i))


# ---------------------------------------------------------------------------------------------- ObjectNet, relabelling


def test_on13_mapping_and_restricted_scoring():
    probe_classes = ["n01440764", ON13["laptop"], "n01443537", ON13["iron"], ON13["car wheel"]]
    cols = class_columns(["iron", "laptop", "car_wheel"], probe_classes, _ALIASES)  # name, name, folder spelling
    assert cols == [3, 1, 4]
    logits = torch.tensor(
        [
            [9.0, 1.0, 0.0, 2.0, 0.5],  # overall argmax is an unmapped class; among the 3: iron
            [0.0, 3.0, 9.0, 1.0, 2.0],
        ]
    )  # among the 3: laptop
    scores = restricted_scores(logits, cols)
    assert scores.tolist() == [[2.0, 1.0, 0.5], [1.0, 3.0, 2.0]]
    acc = topk_accuracy(scores, torch.tensor([0, 1]), ks=(1,))
    assert acc[1] == 100.0
    with pytest.raises(UserError, match="no counterpart"):
        class_columns(["teapot"], probe_classes, _ALIASES)


def test_relabelled_source_matches_by_name():
    src = ArraySource("x", np.zeros((3, 4, 4, 3), np.uint8), np.array([0, 1, 0]), ["dog", "cat"])
    rel = RelabelledSource(src, ["ant", "cat", "dog"])
    assert rel.labels.tolist() == [2, 1, 2] and rel.classes == ["ant", "cat", "dog"]


def test_subset_is_seeded_and_sized():
    src = _source(n=50)
    a, b = subset(src, 10, seed=3), subset(src, 10, seed=3)
    assert len(a) == 10 and np.array_equal(a.indices, b.indices)
    assert not np.array_equal(a.indices, subset(src, 10, seed=4).indices)
    assert torch.equal(a.image(0), src.image(int(a.indices[0])))
    assert subset(src, None) is src and subset(src, 99) is src


# ---------------------------------------------------------------------------------------------- linear, LooC++ features


def test_fit_linear_separates_separable_features():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 8, generator=g) * 2
    y = torch.arange(500) % 5
    f = centres[y] + 0.2 * torch.randn(500, 8, generator=g)
    clf = fit_linear(f, y, get_protocol("looc").with_overrides(epochs=5, lr=1.0, augment=False), 5)
    with torch.no_grad():
        assert topk_accuracy(clf(f), y, ks=(1,))[1] == 100.0


def test_looc_plus_plus_feature_dimensions():
    from cssl_bench.methods.looc import LooC

    r = Recipe(method="looc", scale="tiny")
    r.model.backbone, r.data.image_size = "resnet18-w0.25", 32
    r.augment.views, r.augment.looc_augment = "looc", ["color", "rotation"]  # 2 augmentations -> 3 heads
    r.params = {"hidden": 32, "dim": 16, "queue_size": 64}
    m = LooC(r).eval()
    x = torch.randn(2, 3, 32, 32)
    v = m.feat_dim
    with torch.no_grad():
        dims = {k: m.features(x, k).shape for k in m.feature_kinds()}
        assert dims["backbone"] == (2, v)
        assert dims["concat"] == (2, 3 * 32)
        assert dims["concat:out"] == (2, 3 * 16)
        assert dims["concat:hidden+v"] == (2, 3 * 32 + v)
        assert dims["head:2"] == (2, 32) and dims["head:0:out"] == (2, 16)
        heads = torch.cat([m.features(x, f"head:{i}") for i in range(3)], dim=1)
        assert torch.allclose(m.features(x, "concat"), heads)


def test_corruption_table_layout():
    from cssl_bench.eval.corruption import corruption_table

    recs = [
        {"metric": m, "value": v}
        for m, v in [
            ("corruption/fog/s5", 30.0),
            ("corruption/gaussian_noise/s1", 80.0),
            ("corruption/gaussian_noise/s5", 40.0),
            ("corruption/all", 50.0),
        ]
    ]
    header, rows = corruption_table(recs)
    assert header == ["corruption", "s1", "s5", "mean"]
    assert rows == [["gaussian_noise", "80.0", "40.0", "60.0"], ["fog", "", "30.0", "30.0"]]  # canonical order


def test_simsiam_probe_lars_adapts_with_zero_weight_decay():
    """The simsiam protocol (LARS, wd 0) scales every parameter's step by the trust ratio, as apex's LARC in the
    SimSiam repo: one step from zero momentum moves a weight by lr * 0.001 * |w| / |g| * g, not SGD's lr * g."""
    from cssl_bench.eval.linear import LinearClassifier, train_linear

    p = get_protocol("simsiam").with_overrides(epochs=1)
    assert p.optimizer == "lars" and p.weight_decay == 0.0
    torch.manual_seed(1)
    f, y = torch.randn(32, 6), torch.arange(32) % 3
    clf = train_linear(lambda epoch: [(f, y)], 6, 3, p, steps_per_epoch=1)
    torch.manual_seed(p.seed)  # train_linear seeds, then initialises: the same start by hand
    ref = LinearClassifier(6, 3)
    w0 = ref.fc.weight.detach().clone()
    torch.nn.functional.cross_entropy(ref(f), y).backward()
    g = ref.fc.weight.grad
    expected = w0 - p.effective_lr * 0.001 * w0.norm() / g.norm() * g
    assert torch.allclose(clf.fc.weight.detach(), expected, rtol=1e-4, atol=1e-7)
    assert (clf.fc.weight.detach() - w0).norm() < 0.01 * (p.effective_lr * g).norm()  # far from SGD's step


def test_stored_imagenet_c_images_are_not_cropped_twice():
    """ImageNet-C's files are already the 224 centre crops of the clean test images: their transform keeps a
    224 image as it is (Hendrycks' CenterCrop(224)), where the clean one (resize 256, crop 224) would zoom it."""
    from cssl_bench.eval.corruption import stored_corrupted_transform
    from cssl_bench.eval.features import eval_transform

    img = torch.randint(0, 256, (3, 224, 224), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    assert torch.equal(stored_corrupted_transform(224)(img), img)
    assert not torch.equal(eval_transform(224)(img), img)
    assert stored_corrupted_transform(64)(img).shape == (3, 64, 64)


def test_simsiam_probe_makes_the_papers_number_of_updates(monkeypatch):
    """The simsiam protocol's 90 epochs are ImageNet epochs: on n images it makes 90 * 1,281,167 / n passes (the
    paper's 28k LARS updates at batch 4096), recorded as paper_train_images; SGD protocols are unchanged."""
    from cssl_bench.eval.linear import IMAGENET_TRAIN_IMAGES

    p = get_protocol("simsiam")
    assert p.passes(IMAGENET_TRAIN_IMAGES) == 90 and p.passes(10000) == round(90 * IMAGENET_TRAIN_IMAGES / 10000)
    assert p.passes(256) == 90 * (IMAGENET_TRAIN_IMAGES // 4096)  # capped at the paper's updates (one step a pass)
    assert p.record()["paper_train_images"] == IMAGENET_TRAIN_IMAGES and p.record()["epochs"] == 90
    # the scales' defaults: the tiny (CI) scale takes the literal 90 passes, small and paper the paper's images
    assert p.for_scale("tiny").passes(10000) == 90 and "paper_train_images" not in p.for_scale("tiny").record()
    assert p.for_scale("small").passes(10000) == p.passes(10000) and not p.for_scale("small").augment
    assert p.for_scale("paper").augment
    # evaluate's suites take the same defaults (its options on top)
    from cssl_bench.eval.suite import SuiteOptions, linear_protocol

    for scale in ("tiny", "small", "paper"):
        assert linear_protocol("simsiam", SuiteOptions(), scale).record() == p.for_scale(scale).record()
    assert (
        linear_protocol("simsiam", SuiteOptions(linear_epochs=3, augment=True), "tiny").record()
        == p.for_scale("tiny").with_overrides(epochs=3, augment=True).record()
    )
    q = get_protocol("looc")
    assert q.passes(10000) == 200 and q.for_train_size(10000) is q
    assert "paper_train_images" not in q.record() and "trust_coefficient" not in q.record()
    m = q.with_overrides(paper_train_images=20000).for_train_size(10000)
    assert m.epochs == 400 and m.milestones == [240, 320]  # the schedule stretches with the passes
    # fit_linear trains the scaled protocol: with 4,096 images, one step a pass, the paper's 90 * 312 steps
    steps = []
    f, y = torch.randn(4096, 4), torch.arange(4096) % 2
    from cssl_bench.eval import linear as L

    real = L.train_linear  # record the steps it was asked for, train one epoch of them
    monkeypatch.setattr(
        L,
        "train_linear",
        lambda batches, dim, classes, p, spe, *a: (
            steps.append(p.epochs * spe) or real(batches, dim, classes, p.with_overrides(epochs=1), spe, *a)
        ),
    )
    fit_linear(f, y, get_protocol("simsiam"), 2)
    assert steps == [90 * (IMAGENET_TRAIN_IMAGES // 4096)]
