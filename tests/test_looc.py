"""LooC (Xiao et al., ICLR 2021): the leave-one-out views built from a recipe, the positive/negative masks
of every embedding space, the loss against a hand-written loop, the per-head queues and LooC++ features."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cssl_bench import UserError
from cssl_bench.config import load_recipe
from cssl_bench.data.views import build_view_recipe
from cssl_bench.methods import build_method, losses

SUBSETS = {1: ["color"], 2: ["color", "rotation"], 3: ["color", "rotation", "texture"]}


def looc_recipe(augment, **params):
    sets = [f"augment.looc_augment=[{','.join(augment)}]"] + [f"params.{k}={v}" for k, v in params.items()]
    return load_recipe("looc", "tiny", sets=sets)


def image(i, size=32):
    g = torch.Generator().manual_seed(100 + i)
    return torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8)


def render(view_recipe, img, p):
    """Re-apply a LeaveOneOut view from its recorded parameters (base, then atomics, then post)."""
    x = img
    for step in view_recipe.base.steps + view_recipe.atomics + view_recipe.post.steps:
        x = step.apply(x, p[step.name])
    return x


@pytest.mark.parametrize("n", [1, 2, 3])
def test_view_generator_shares_exactly_augmentation_i_with_q(n):
    names = SUBSETS[n]
    vr = build_view_recipe(looc_recipe(names))
    assert [a.name for a in vr.atomics] == names
    redrawn = {a: 0 for a in names}
    base_differs = 0
    trials = 24
    for i in range(trials):
        img = image(i)
        views, p = vr(img, np.random.default_rng([0, 0, i]))
        assert list(views) == ["q", "k0"] + [f"k{j}" for j in range(1, n + 1)]
        for v in views:  # the recorded parameters are the ones that made the view
            assert torch.equal(views[v], render(vr, img, p[v])), v
        for j, aug in enumerate(names, start=1):
            assert p[f"k{j}"][aug] == p["q"][aug]  # k_j: exactly q's parameters of augmentation j
            for other in names:
                if other != aug:
                    redrawn[other] += p[f"k{j}"][other] != p["q"][other]
        for aug in names:  # k0 draws every augmentation afresh
            redrawn[aug] += p["k0"][aug] != p["q"][aug]
        base_differs += all(p[v]["crop"] != p["q"]["crop"] for v in views if v != "q")
    # fresh draws differ from q's (rotation repeats q's angle with probability 1/4, continuous draws never)
    for aug in names:
        draws = trials * (1 + (n - 1))
        assert redrawn[aug] >= (0.5 if aug == "rotation" else 0.95) * draws, (aug, redrawn[aug], draws)
    assert base_differs >= trials - 2  # the base augmentation (crop) is drawn per view


def expected_masks(n):
    rows = [[True] * (n + 1)]
    for i in range(1, n + 1):
        rows.append([j == i for j in range(n + 1)])
    return torch.tensor(rows)


def test_masks_of_every_space():
    assert torch.equal(losses.looc_masks(1), torch.tensor([[True, True], [False, True]]))
    assert torch.equal(
        losses.looc_masks(2), torch.tensor([[True, True, True], [False, True, False], [False, False, True]])
    )
    for n in (1, 2, 3):
        m = losses.looc_masks(n)
        assert m.shape == (n + 1, n + 1) and m.dtype == torch.bool
        assert torch.equal(m, expected_masks(n))
        assert m[0].all()  # Z0: every key of the image is a positive
        for i in range(1, n + 1):  # Z_i: only k_i; k0 and every other k_j are negatives
            assert m[i].nonzero().flatten().tolist() == [i]
    assert torch.equal(losses.looc_masks(0), torch.tensor([[True]]))  # no variance head: Z0 alone
    with pytest.raises(ValueError):
        losses.looc_masks(-1)


def ref_looc_loss(queries, keys, queues, t):
    """Explicit loops: for each space s and image b, one InfoNCE term per positive key of the image, whose
    denominator holds that positive, the image's own keys that are negatives in s, and the queue."""
    n = len(queries) - 1
    total = 0.0
    for s in range(n + 1):
        pos = [0, *range(1, n + 1)] if s == 0 else [s]
        neg_own = [] if s == 0 else [j for j in range(n + 1) if j != s]
        space = 0.0
        for b in range(queries[s].shape[0]):
            q = queries[s][b]
            terms = []
            for j in pos:
                num = math.exp(float(q @ keys[s][j, b]) / t)
                den = num + sum(math.exp(float(q @ keys[s][o, b]) / t) for o in neg_own)
                den += sum(math.exp(float(q @ queues[s][r]) / t) for r in range(queues[s].shape[0]))
                terms.append(-math.log(num / den))
            space += sum(terms) / len(terms)
        total += space / queries[s].shape[0]
    return total


def random_inputs(n, batch=4, dim=6, queue=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    unit = lambda *shape: F.normalize(torch.randn(*shape, generator=g), dim=-1)  # noqa: E731
    return (
        [unit(batch, dim) for _ in range(n + 1)],
        [unit(n + 1, batch, dim) for _ in range(n + 1)],
        [unit(queue, dim) for _ in range(n + 1)],
    )


@pytest.mark.parametrize("n", [1, 2, 3])
def test_looc_loss_matches_loop_reference(n):
    q, k, queue = random_inputs(n, seed=n)
    for t in (0.2, 0.5):
        assert losses.looc_loss(q, k, queue, t).item() == pytest.approx(ref_looc_loss(q, k, queue, t), rel=1e-5)


def test_looc_loss_analytic_and_gradients():
    # n = 1, one image, q equal to every key, queue orthogonal to q: Z0 has 2 terms -log(e^{1/t} / (e^{1/t} + K)),
    # Z1 has one term with k0 as an own negative: -log(e^{1/t} / (2 e^{1/t} + K))
    t, e = 0.5, torch.eye(4)
    q = e[:1]
    keys = torch.stack([e[:1], e[:1]])
    queue = e[1:3]
    z0 = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2))
    z1 = -math.log(math.exp(1 / t) / (2 * math.exp(1 / t) + 2))
    assert losses.looc_loss([q, q], [keys, keys], [queue, queue], t).item() == pytest.approx(z0 + z1, rel=1e-6)
    qs, ks, qu = random_inputs(2)
    qs = [x.clone().requires_grad_() for x in qs]
    ks = [x.clone().requires_grad_() for x in ks]
    losses.looc_loss(qs, ks, qu, 0.2).backward()
    assert all(x.grad is not None for x in qs) and all(x.grad is None for x in ks)


def small_batch(recipe, n_images=16):
    vr = build_view_recipe(recipe)
    items = [vr(image(i), np.random.default_rng([1, 0, i]))[0] for i in range(n_images)]
    from cssl_bench.data.loader_base import to_input

    return {k: to_input(torch.stack([it[k] for it in items]), False) for k in items[0]}


@pytest.mark.parametrize("n", [1, 2, 3])
def test_model_heads_queues_and_keys(n):
    torch.manual_seed(0)
    recipe = looc_recipe(SUBSETS[n], queue_size=64, bn_splits=1, hidden=32)
    m = build_method(recipe)
    assert len(m.heads) == len(m.heads_k) == len(m.queues) == n + 1
    views = small_batch(recipe)
    assert set(views) == {"q", *(f"k{i}" for i in range(n + 1))}
    with torch.no_grad():  # every head's k0 keys, computed as the key encoder does (one BN batch over all key views)
        v = m.backbone_k(torch.cat([views[f"k{i}"] for i in range(n + 1)]))
        expected = [F.normalize(h(v), dim=1)[:16] for h in m.heads_k]
    before = [qq.keys.clone() for qq in m.queues]
    out = m.loss(views, torch.zeros(16, dtype=torch.long))
    assert out["loss"].dim() == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert m.heads[0][0].weight.grad is not None and all(p.grad is None for p in m.heads_k.parameters())
    for s in range(n + 1):  # one queue per head, filled with that head's k0 keys
        assert torch.allclose(m.queues[s].keys[:16], expected[s], atol=1e-5)
        assert torch.equal(m.queues[s].keys[16:], before[s][16:])
        assert int(m.queues[s].ptr) == 16
    assert not torch.allclose(m.queues[0].keys[:16], m.queues[1].keys[:16])  # heads differ: their queues differ


def test_key_heads_are_shuffled_with_the_backbone():
    """Shuffling BN covers the whole key encoder, as MoCo's: with BN in the heads (head_bn) and BN groups,
    every head sees the same shuffled batch as the backbone, so its groups mix images too."""
    torch.manual_seed(0)
    recipe = looc_recipe(["color", "rotation"], queue_size=64, bn_splits=4, hidden=32, head_bn="true")
    m = build_method(recipe).train()
    views = small_batch(recipe)
    key_views = [views[f"k{i}"] for i in range(3)]
    x = torch.cat(key_views)
    torch.manual_seed(5)
    got = m._keys(key_views)
    torch.manual_seed(5)
    perm = torch.randperm(x.shape[0])  # the permutation shuffled_forward draws
    with torch.no_grad():
        f = m.backbone_k(x[perm])
        want = [F.normalize(h(f), dim=1)[torch.argsort(perm)].view(3, -1, m.p.dim) for h in m.heads_k]
        unshuffled_heads = F.normalize(m.heads_k[0](m.backbone_k(x[perm])[torch.argsort(perm)]), dim=1).view(
            3, -1, m.p.dim
        )
    for g, w in zip(got, want):
        assert torch.allclose(g, w, atol=1e-5)
    assert not torch.allclose(got[0], unshuffled_heads, atol=1e-3)  # heads outside the shuffle differ


def test_looc_plus_plus_features():
    # heads without BN (the paper recipe's; the CPU recipes add head BN, covered by test_head_bn_option_...)
    recipe = load_recipe("looc++", "tiny", sets=["params.hidden=32", "params.dim=8", "params.head_bn=false"])
    m = build_method(recipe).eval()
    assert m.default_feature() == "concat"
    x = small_batch(recipe, 4)["q"]
    with torch.no_grad():
        v = m.backbone(x)
        heads = [h[:2](v) for h in m.heads]  # hidden layer: Linear + ReLU
        assert torch.allclose(m.features(x, "concat"), torch.cat(heads, 1), atol=1e-6)
        assert m.features(x, "concat").shape == (4, 3 * 32)
        assert m.features(x, "concat:out").shape == (4, 3 * 8)
        assert torch.allclose(m.features(x, "concat:hidden+v"), torch.cat(heads + [v], 1), atol=1e-6)
        assert torch.allclose(m.features(x, "head:1"), heads[1], atol=1e-6)
        assert torch.allclose(m.features(x, "head:2:out"), m.heads[2](v), atol=1e-6)
        assert torch.allclose(m.features(x, "backbone"), v, atol=1e-6)
    assert build_method(load_recipe("looc", "tiny")).default_feature() == "backbone"
    assert (
        build_method(load_recipe("looc++", "tiny", sets=["params.concat_layer=out"])).default_feature() == "concat:out"
    )
    with pytest.raises(UserError):
        m.features(x, "head:7")
    with pytest.raises(UserError):
        build_method(load_recipe("looc++", "tiny", sets=["params.concat_layer=middle"]))


def test_cli_augment_sets_the_atomic_augmentations(cli, tmp_path, small_args):
    p = cli(
        "pretrain",
        "looc",
        "--augment",
        "color,rotation,texture",
        "--epochs",
        "0",
        "--out",
        tmp_path / "r",
        "--quiet",
        *small_args,
    )
    assert p.returncode == 0, p.stderr
    import yaml

    cfg = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert cfg["augment"]["looc_augment"] == ["color", "rotation", "texture"]
    p = cli(
        "pretrain",
        "looc",
        "--augment",
        "color,scale",
        "--epochs",
        "0",
        "--out",
        tmp_path / "bad",
        "--quiet",
        *small_args,
    )
    assert p.returncode == 2 and "scale" in p.stderr and "Traceback" not in p.stderr


# --- variance heads (augment.looc_heads, LooC Table 5): which applied augmentations get a Z_i and a k_i ----------
ALL3 = ["color", "rotation", "texture"]


@pytest.mark.parametrize("heads", [["texture", "color"], ["rotation"], []])
def test_variance_heads_choose_the_variant_views(heads):
    recipe = load_recipe(
        "looc", "tiny", sets=[f"augment.looc_augment=[{','.join(ALL3)}]", f"augment.looc_heads=[{','.join(heads)}]"]
    )
    vr = build_view_recipe(recipe)
    assert [a.name for a in vr.atomics] == ALL3  # every augmentation is applied to every view
    for i in range(12):
        img = image(i)
        views, p = vr(img, np.random.default_rng([3, 0, i]))
        assert list(views) == ["q", "k0"] + [f"k{j}" for j in range(1, len(heads) + 1)]
        for v in views:
            assert torch.equal(views[v], render(vr, img, p[v])), v
            assert set(ALL3) <= set(p[v])
        for j, aug in enumerate(heads, start=1):
            assert p[f"k{j}"][aug] == p["q"][aug]  # k_j shares exactly q's parameters of the j-th head's augmentation
            for other in ALL3:
                if other != aug and other != "rotation":  # continuous draws never repeat q's
                    assert p[f"k{j}"][other] != p["q"][other], (aug, other)
    m = build_method(
        load_recipe(
            "looc",
            "tiny",
            sets=[
                f"augment.looc_augment=[{','.join(ALL3)}]",
                f"augment.looc_heads=[{','.join(heads)}]",
                "params.queue_size=64",
                "params.bn_splits=1",
                "params.hidden=32",
            ],
        )
    )
    assert len(m.heads) == len(m.heads_k) == len(m.queues) == len(heads) + 1
    torch.manual_seed(0)
    views = small_batch(m.recipe)
    out = m.loss(views, torch.zeros(16, dtype=torch.long))
    assert torch.isfinite(out["loss"]) and out["loss"].dim() == 0
    out["loss"].backward()
    assert all(h[0].weight.grad is not None for h in m.heads)


def test_without_variance_heads_the_loss_is_mocos_infonce():
    q, k, queue = random_inputs(0, seed=5)
    for t in (0.2, 0.07):
        assert losses.looc_loss(q, k, queue, t).item() == pytest.approx(
            losses.info_nce(q[0], k[0][0], queue[0], t).item(), rel=1e-6
        )


def test_variance_heads_validation_and_hash():
    base = load_recipe("looc", "tiny", sets=[f"augment.looc_augment=[{','.join(ALL3)}]"])
    spelled = load_recipe(
        "looc", "tiny", sets=[f"augment.looc_augment=[{','.join(ALL3)}]", f"augment.looc_heads=[{','.join(ALL3)}]"]
    )
    assert (
        spelled.augment.looc_heads is None and spelled.hash() == base.hash()
    )  # the default spelled out is the same run
    sub = load_recipe("looc", "tiny", sets=[f"augment.looc_augment=[{','.join(ALL3)}]", "augment.looc_heads=[color]"])
    none = load_recipe("looc", "tiny", sets=[f"augment.looc_augment=[{','.join(ALL3)}]", "augment.looc_heads=[]"])
    assert len({base.hash(), sub.hash(), none.hash()}) == 3
    with pytest.raises(UserError, match="does not apply"):
        load_recipe("looc", "tiny", sets=["augment.looc_augment=[rotation]", "augment.looc_heads=[color]"])
    with pytest.raises(UserError, match="twice"):
        load_recipe(
            "looc", "tiny", sets=[f"augment.looc_augment=[{','.join(ALL3)}]", "augment.looc_heads=[color,color]"]
        )


def test_hashes_of_committed_runs_are_unchanged_by_new_options():
    """Options added after records existed stay out of the hash at their default, so `reproduce` still finds
    the committed tiny runs (results/tiny: LooC Table 1 at tiny scale)."""
    import json
    from pathlib import Path

    from cssl_bench.pipeline.reproduce import recipe_of, run_spec

    recs = [
        json.loads(line)
        for line in (Path(__file__).parents[1] / "results" / "tiny" / "records.jsonl").read_text().splitlines()
    ]
    looc = {
        r["config_hash"]
        for r in recs
        if r["method"] == "looc"
        and r.get("augment") == ["rotation"]
        and r["seed"] == 0
        and (r.get("data_options") or {}).get("embedded_version") == 2
    }  # the records of the current generator
    assert looc == {recipe_of(run_spec("looc[rotation]", "tiny"), "tiny", 0).hash()}


def test_catalogue_keys_and_commands_of_variance_head_runs(tmp_path):
    from cssl_bench.pipeline import reproduce as R

    s = R.run_spec("looc[color,rotation,texture;heads=]", "small")
    assert s.augment == tuple(ALL3) and s.heads == ()
    assert R.run_spec("looc[color,rotation,texture;heads=rotation]", "small").heads == ("rotation",)
    assert R.run_spec("looc[color,rotation]", "small").heads is None
    plan = R.plan(["heads"], "tiny", results=tmp_path / "results", runs_dir=tmp_path / "runs")
    cmds = [r.command("tiny") for r in plan.runs]
    assert sum("--variance-heads none" in c for c in cmds) == 1
    assert sum("--variance-heads" in c for c in cmds) == 4  # rows 1-4; row 5 is the default (a head per augmentation)
    assert len({r.run_dir for r in plan.runs}) == 5


def test_cli_variance_heads_option(cli, tmp_path, small_args):
    import yaml

    p = cli(
        "pretrain",
        "looc",
        "--augment",
        "color,rotation",
        "--variance-heads",
        "none",
        "--epochs",
        "0",
        "--out",
        tmp_path / "r",
        "--quiet",
        *small_args,
    )
    assert p.returncode == 0, p.stderr
    assert yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())["augment"]["looc_heads"] == []
    p = cli(
        "pretrain",
        "looc",
        "--augment",
        "rotation",
        "--variance-heads",
        "texture",
        "--epochs",
        "0",
        "--out",
        tmp_path / "bad",
        "--quiet",
        *small_args,
    )
    assert p.returncode == 2 and "does not apply" in p.stderr and "Traceback" not in p.stderr
