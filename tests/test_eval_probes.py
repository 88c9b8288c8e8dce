"""Every probe on a tiny MoCo v2 run of the embedded dataset (1 epoch on 640 images), through the
library and the CLI, and `evaluate --suite all`."""

import json
import shutil

import numpy as np
import pytest
import torch
import yaml

SMALL = ["--set", "data.embedded_train=640", "--set", "data.embedded_test=200", "--set", "data.workers=0"]


@pytest.fixture(scope="module")
def moco_run(tmp_path_factory):
    from tests.conftest import run_cli

    out = tmp_path_factory.mktemp("eval") / "moco"
    p = run_cli("pretrain", "moco-v2", "--epochs", "1", "--batch-size", "64", "--out", out, "--quiet", *SMALL)
    assert p.returncode == 0, p.stderr
    return out


@pytest.fixture(scope="module")
def run(moco_run):
    from cssl_bench.eval.features import load_run

    return load_run(moco_run)


def _p(epochs=3, feature_norm=None):
    from cssl_bench.eval.linear import get_protocol

    return get_protocol("looc").with_overrides(epochs=epochs, augment=False, feature_norm=feature_norm)


def _metrics(recs):
    return {r["metric"]: r["value"] for r in recs}


def test_augmented_linear_probe_trains_on_fresh_views(moco_run, tmp_path, monkeypatch):
    """augment=True (the paper-scale probe): every epoch's features come from random-resized-crop + flip views of
    the training split, scaled passes (for_train_size of its image count), the train split's classes."""
    import shutil

    from cssl_bench.eval import linear as L
    from cssl_bench.eval.features import load_run
    from cssl_bench.eval.linear import get_protocol
    from cssl_bench.eval.probes import probe_linear, source_of

    shutil.copytree(moco_run, tmp_path / "run")  # its cached probe stays out of the shared run's features/
    run = load_run(tmp_path / "run")
    seen = []
    real = L.train_linear
    monkeypatch.setattr(
        "cssl_bench.eval.probes.train_linear",
        lambda batches, dim, classes, p, spe, *a: (
            seen.append((classes, p.epochs, spe)) or real(batches, dim, classes, p, spe, *a)
        ),
    )
    p = get_protocol("looc").with_overrides(
        epochs=1, augment=True, batch_size=128, paper_train_images=2 * len(source_of(run, "embedded", "train"))
    )
    recs, _ = probe_linear(run, "embedded", p)
    n = len(source_of(run, "embedded", "train"))
    assert seen == [(10, 2, n // 128)]  # twice the images: two passes
    assert recs[0]["protocol"]["augment"] is True and 0 <= _metrics(recs)["linear/top1"] <= 100


def test_linear_classifier_is_cached_and_shared(run):
    from cssl_bench.eval.features import features
    from cssl_bench.eval.objectnet import probe_objectnet
    from cssl_bench.eval.probes import accuracy, linear_classifier, probe_linear

    recs, clf = probe_linear(run, "embedded", _p())
    m = _metrics(recs)
    assert set(m) == {"linear/top1", "linear/top5"} and recs[0]["protocol"]["name"] == "looc"
    assert 0 <= m["linear/top1"] <= m["linear/top5"] <= 100
    files = sorted((run.run_dir / "features").glob("linear-*.pt"))
    assert len(files) == 1
    again = linear_classifier(run, "embedded", _p())
    assert torch.equal(again.fc.weight, clf.fc.weight)
    # ObjectNet stand-in: the same (cached) embedded probe; the 10 shifted classes map onto all 10 columns
    on = probe_objectnet(run, "embedded-shift", _p())
    assert sorted((run.run_dir / "features").glob("linear-*.pt")) == files
    f, y = features(run, "embedded-shift", "test", "backbone")
    direct = accuracy(clf, f, y)
    assert _metrics(on) == pytest.approx({"objectnet/top1": direct[1], "objectnet/top5": direct[5]}, abs=1e-3)
    assert on[0]["protocol"]["probe_dataset"] == "embedded" and on[0]["protocol"]["classes"] == 10


def test_rotation_probe(run):
    from cssl_bench.eval.features import features
    from cssl_bench.eval.rotation import probe_rotation

    recs = probe_rotation(run, "embedded", _p(), limit=50, seed=0)
    assert [r["metric"] for r in recs] == ["rotation/acc"]
    assert 0 <= recs[0]["value"] <= 100
    proto = recs[0]["protocol"]
    assert proto["name"] == "rotation" and proto["limit"] == 50 and proto["linear"]["augment"] is False
    # the cached rotated feature sets hold 4 x 50 images with angle labels 0..3
    tag = {"task": "rotation4", "limit": 50, "subset_seed": 0}
    f, y = features(run, "embedded", "test", "backbone", cache_tag=tag)  # served from the cache
    assert f.shape[0] == 200 and torch.bincount(y).tolist() == [50] * 4


def test_fewshot_probe_is_reproducible(run):
    from cssl_bench.eval.fewshot import FewShotProtocol, probe_fewshot

    p = FewShotProtocol(shots=[2, 5], trials=3, seed=1)
    a = probe_fewshot(run, "embedded-color", p)
    b = probe_fewshot(run, "embedded-color", p)
    assert [r["metric"] for r in a] == ["fewshot/2shot", "fewshot/5shot"]
    assert [(r["value"], r["ci95"]) for r in a] == [(r["value"], r["ci95"]) for r in b]
    assert all(r["ci95"] >= 0 and r["dataset"] == "embedded-color" for r in a)
    assert a[0]["protocol"]["trials"] == 3 and a[0]["protocol"]["ci"] == "t"


def test_finegrained_probe(run):
    from cssl_bench.eval.finegrained import probe_finegrained

    recs = probe_finegrained(run, "embedded-color", _p())
    assert set(_metrics(recs)) == {"finegrained/top1", "finegrained/top5"}
    assert recs[0]["protocol"]["name"] == "finegrained" and recs[0]["protocol"]["linear"]["name"] == "looc"


def test_corruption_probe_groups_and_determinism(run, tmp_path, monkeypatch):
    from cssl_bench.eval.corruption import probe_corruption

    kw = dict(corruptions=["gaussian_noise", "pixelate"], severities=[1, 5], limit=40, seed=0)
    m = _metrics(probe_corruption(run, "embedded", _p(), **kw))
    per = {k: v for k, v in m.items() if k.count("/") == 2}
    assert set(per) == {f"corruption/{c}/s{s}" for c in ("gaussian_noise", "pixelate") for s in (1, 5)}
    assert set(m) - set(per) == {"corruption/noise", "corruption/digital", "corruption/all", "corruption/d>3"}
    assert m["corruption/noise"] == pytest.approx(
        (per["corruption/gaussian_noise/s1"] + per["corruption/gaussian_noise/s5"]) / 2, abs=1e-3
    )
    assert m["corruption/all"] == pytest.approx(np.mean(list(per.values())), abs=1e-3)
    assert m["corruption/d>3"] == pytest.approx(
        (per["corruption/gaussian_noise/s5"] + per["corruption/pixelate/s5"]) / 2, abs=1e-3
    )
    # determinism: a fresh copy of the run with empty caches scores exactly the same
    fresh = tmp_path / "copy"
    shutil.copytree(run.run_dir, fresh, ignore=shutil.ignore_patterns("features"))
    monkeypatch.setenv("CSSL_BENCH_CACHE", str(tmp_path / "cache"))
    from cssl_bench.eval.features import load_run

    m2 = _metrics(probe_corruption(load_run(fresh), "embedded", _p(), **kw))
    assert m2 == m


def test_probe_cli_rotation_json_and_store(moco_run, cli, tmp_path):
    res = tmp_path / "results"
    p = cli("probe", "rotation", moco_run, "--epochs", "2", "--limit", "30", "--json", "--results", res)
    assert p.returncode == 0, p.stderr
    recs = json.loads(p.stdout)
    assert [r["metric"] for r in recs] == ["rotation/acc"] and recs[0]["method"] == "moco-v2"
    stored = [json.loads(line) for line in (res / "records.jsonl").read_text().splitlines()]
    assert [r["id"] for r in stored] == [r["id"] for r in recs]


def test_probe_cli_fewshot_table_shows_half_width(moco_run, capsys, tmp_path):
    code, out, err = _main(capsys, "probe", "fewshot", moco_run, "--shots", "2", "--trials", "2", "--results", tmp_path)
    assert code == 0, err
    assert "fewshot/2shot" in out and "(±" in out


def _main(capsys, *args):
    """The CLI entry point in-process (no interpreter start-up): (exit code, stdout, stderr)."""
    from cssl_bench.cli import main

    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize(
    "args, needle",
    [
        (["probe", "corruption", "RUN", "--corruptions", "rain"], "unknown corruption"),
        (["probe", "rotation", "RUN", "--protocol", "byol"], "unknown linear protocol"),
        (["probe", "objectnet", "RUN", "--feature", "concat"], "not available for moco-v2"),
        (["evaluate", "RUN", "--suite", "everything"], "unknown suite"),
    ],
)
def test_bad_options_fail_with_one_line(moco_run, capsys, tmp_path, args, needle):
    code, out, err = _main(capsys, *[moco_run if a == "RUN" else a for a in args], "--results", tmp_path)
    assert code == 2, out + err
    assert needle in err and len(err.strip().splitlines()) == 1


def test_missing_or_foreign_checkpoint_fails_with_one_line(moco_run, capsys, tmp_path):
    missing = tmp_path / "missing"
    shutil.copytree(moco_run, missing, ignore=shutil.ignore_patterns("checkpoints", "features"))
    code, _, err = _main(capsys, "probe", "finegrained", missing, "--results", tmp_path)
    assert code == 1 and "does not exist" in err and len(err.strip().splitlines()) == 1
    foreign = tmp_path / "foreign"
    shutil.copytree(moco_run, foreign, ignore=shutil.ignore_patterns("features"))
    cfg = yaml.safe_load((foreign / "config.yaml").read_text())
    cfg["method"] = "simclr"
    (foreign / "config.yaml").write_text(yaml.safe_dump(cfg))
    code, _, err = _main(capsys, "evaluate", foreign, "--suite", "looc", "--results", tmp_path)
    assert code == 1 and "moco-v2" in err and len(err.strip().splitlines()) == 1
    not_ours = tmp_path / "not-ours"
    shutil.copytree(moco_run, not_ours, ignore=shutil.ignore_patterns("features"))
    torch.save({"state_dict": {}}, not_ours / "checkpoints" / "last.pt")
    code, _, err = _main(capsys, "probe", "corruption", not_ours, "--results", tmp_path)
    assert code == 1 and "not a cssl-bench checkpoint" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "records.jsonl").exists()


def test_evaluate_suite_all_with_subsets(moco_run, cli, tmp_path):
    res = tmp_path / "results"
    p = cli(
        "evaluate",
        moco_run,
        "--suite",
        "all",
        "--linear-epochs",
        "2",
        "--rotation-limit",
        "30",
        "--corruptions",
        "gaussian",
        "--severities",
        "5",
        "--limit",
        "30",
        "--shots",
        "1,2",
        "--trials",
        "2",
        "--json",
        "--results",
        res,
    )
    assert p.returncode == 0, p.stderr
    recs = json.loads(p.stdout)
    by = {(r["metric"], r["dataset"], r["protocol"].get("name")) for r in recs}
    expected = {
        ("linear/top1", "embedded", "simsiam"),
        ("linear/top1", "embedded", "looc"),
        ("rotation/acc", "embedded", "rotation"),
        ("finegrained/top1", "embedded-fine", "finegrained"),
        ("fewshot/2shot", "embedded-fine", "fewshot"),
        ("corruption/gaussian_noise/s5", "embedded", "corruption"),
        ("corruption/d>3", "embedded", "corruption"),
        ("objectnet/top1", "embedded-shift", "objectnet"),
        ("knn/top1", "embedded", "knn"),
    }
    assert expected <= by
    assert [r["protocol"]["k"] for r in recs if r["metric"] == "knn/top1"] == [200]  # 10 classes: the CIFAR-size k
    assert len((res / "records.jsonl").read_text().splitlines()) == len(recs)


@pytest.mark.slow
def test_evaluate_suite_all_defaults(moco_run, cli, tmp_path):
    """The full suite with every default (15 corruptions x 5 severities, 10 trials, full linear protocols)."""
    p = cli("evaluate", moco_run, "--suite", "all", "--json", "--results", tmp_path)
    assert p.returncode == 0, p.stderr
    metrics = {r["metric"] for r in json.loads(p.stdout)}
    assert len([m for m in metrics if m.startswith("corruption/") and m.count("/") == 2]) == 75
    assert {
        "corruption/all",
        "corruption/noise",
        "corruption/blur",
        "corruption/weather",
        "corruption/digital",
        "corruption/d>3",
        "rotation/acc",
        "fewshot/5shot",
        "fewshot/10shot",
        "objectnet/top5",
        "finegrained/top5",
        "knn/top1",
    } <= metrics


def test_corruption_from_an_imagenet_c_folder_matches_on_the_fly(run, tmp_path):
    """Corrupted images written in ImageNet-C's layout (CORRUPTION/SEVERITY/CLASS/, class folders sorted by
    name, unlike the embedded class order) score exactly as the same images corrupted on the fly."""
    from PIL import Image

    from cssl_bench.data import corruptions as C
    from cssl_bench.eval.corruption import probe_corruption
    from cssl_bench.eval.features import eval_transform
    from cssl_bench.eval.probes import source_of, subset

    clean = subset(source_of(run, "embedded", "test"), 40, 0)
    pairs = [(c, s) for c in ("motion_blur", "jpeg_compression") for s in (2, 4)]
    for c, s in pairs:
        cs = C.CorruptedSource(clean, c, s, seed=0, min_size=64, transform=eval_transform(32))
        for i in range(len(cs)):
            d = tmp_path / "inc" / c / str(s) / cs.classes[int(cs.labels[i])]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(cs.image(i).permute(1, 2, 0).numpy()).save(d / f"{i:03d}.png")
    kw = dict(corruptions=["motion_blur", "jpeg_compression"], severities=[2, 4])
    p = _p(30, "bn")  # a probe whose predictions vary across classes (1-epoch features are weak)
    fly = _metrics(probe_corruption(run, "embedded", p, limit=40, seed=0, **kw))
    recs = probe_corruption(run, "embedded", p, corrupted=f"imagefolder:{tmp_path / 'inc'}", **kw)
    folder = _metrics(recs)
    for c, s in pairs:
        assert folder[f"corruption/{c}/s{s}"] == fly[f"corruption/{c}/s{s}"]
    assert (
        recs[0]["dataset"] == f"imagefolder:{tmp_path / 'inc'}" and recs[0]["protocol"]["source"] == recs[0]["dataset"]
    )


def test_derived_tasks_share_the_features_of_their_images(run):
    """embedded-color and embedded-fine (both splits) and embedded-shift's train split show embedded's images: their
    features are embedded's, extracted once; their labels are their own."""
    from cssl_bench.eval.features import SAME_IMAGES, features
    from cssl_bench.eval.probes import source_of

    for (dataset, split), same in SAME_IMAGES.items():
        a, b = source_of(run, dataset, split), source_of(run, same, split)
        assert np.array_equal(a.images, b.images)  # the premise of the sharing
        f, y = features(run, dataset, split, "backbone")
        g, _ = features(run, same, split, "backbone")
        assert torch.equal(f, g) and np.array_equal(y.numpy(), a.labels)
    assert not np.array_equal(
        source_of(run, "embedded-color", "test").labels, source_of(run, "embedded", "test").labels
    )


def test_probe_cli_corruption_table(moco_run, capsys, tmp_path):
    code, out, err = _main(
        capsys,
        "probe",
        "corruption",
        moco_run,
        "--corruptions",
        "contrast",
        "--severities",
        "2",
        "--limit",
        "20",
        "--epochs",
        "2",
        "--results",
        tmp_path,
    )
    assert code == 0, err
    assert (
        "top-1 under corruption" in out
        and "contrast" in out
        and "corruption/d>3" not in out
        and "corruption/all" in out
    )
    assert len((tmp_path / "records.jsonl").read_text().splitlines()) == 3  # s2 of contrast, digital, all


# --- random-init baselines: BN statistics re-estimated on data (eval.baseline) --------------------------------
@pytest.fixture(scope="module")
def init_run(tmp_path_factory):
    """An epoch-0 (random-init) MoCo v2 run on 512 training images: its backbone has split BN layers."""
    from tests.conftest import run_cli

    out = tmp_path_factory.mktemp("init") / "moco-e0"
    p = run_cli(
        "pretrain",
        "moco-v2",
        "--epochs",
        "0",
        "--out",
        out,
        "--quiet",
        "--set",
        "data.embedded_train=512",
        "--set",
        "data.embedded_test=64",
        "--set",
        "data.workers=0",
        "--backbone",
        "resnet10-w0.125",
    )
    assert p.returncode == 0, p.stderr
    return out


def test_reestimated_bn_holds_the_statistics_of_the_training_images(init_run):
    """The first BN's running mean is the per-channel mean of its inputs (conv1's outputs, which do not depend on BN)
    over the training images, its running variance the mean of the batches' unbiased variances; weights, heads and
    the original run are untouched, and split BN keeps its groups."""
    from cssl_bench.data.loader_base import to_input
    from cssl_bench.data.loaders import eval_loader
    from cssl_bench.eval.baseline import bn_layers, reestimate_bn
    from cssl_bench.eval.features import eval_transform, load_run
    from cssl_bench.eval.probes import source_of

    run = load_run(init_run)
    copy = reestimate_bn(run, "embedded", batch_size=128)  # 512 images: 4 equal batches
    assert run.bn is None and copy.bn == {
        "stats": "data",
        "dataset": "embedded",
        "split": "train",
        "images": 512,
        "batch_size": 128,
        "seed": 0,
    }
    x = torch.cat(
        [
            x
            for x, _ in eval_loader(
                source_of(run, "embedded", "train"), eval_transform(run.recipe.data.image_size), 512
            )
        ]
    )
    assert len(x) == 512
    with torch.no_grad():
        a = run.method.backbone.conv1(
            to_input(x, run.recipe.model.channels_last)
        ).double()  # the first BN's inputs [512, C, H, W]
    first = copy.method.backbone.bn1
    assert first is bn_layers(copy.method.backbone)[0]
    torch.testing.assert_close(first.running_mean.double(), a.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    var = torch.stack([b.transpose(0, 1).reshape(a.shape[1], -1).var(1) for b in a.split(128)]).mean(
        0
    )  # unbiased, per batch
    torch.testing.assert_close(first.running_var.double(), var, rtol=1e-3, atol=1e-5)
    assert int(first.num_batches_tracked) == 4
    # every backbone BN moved off its initial statistics; the original still holds them (mean 0, variance 1)
    for m, m0 in zip(bn_layers(copy.method.backbone), bn_layers(run.method.backbone)):
        assert not torch.allclose(m.running_mean, torch.zeros_like(m.running_mean))
        assert torch.equal(m0.running_mean, torch.zeros_like(m0.running_mean)) and torch.equal(
            m0.running_var, torch.ones_like(m0.running_var)
        )
        assert m.momentum == m0.momentum and getattr(m, "splits", None) == getattr(m0, "splits", None)
    assert getattr(bn_layers(run.method.backbone)[0], "splits", 1) > 1  # the case the estimate must not split
    # weights and every state outside the backbone's BN statistics unchanged
    s0, s1 = run.method.state_dict(), copy.method.state_dict()
    assert s0.keys() == s1.keys()
    bn_buffers = {
        f"backbone.{n}.{b}"
        for n, m in run.method.backbone.named_modules()
        if m in bn_layers(run.method.backbone)
        for b in ("running_mean", "running_var", "num_batches_tracked")
    }
    assert all(torch.equal(s0[k], s1[k]) for k in s0 if k not in bn_buffers)
    assert not copy.method.training and not copy.method.backbone.training


def test_bn_data_probe_has_its_own_caches_and_says_so_in_its_records(init_run, tmp_path):
    from cssl_bench.eval.baseline import bn_images, reestimate_bn
    from cssl_bench.eval.features import _cache_key, load_run
    from cssl_bench.eval.probes import _classifier_path, probe_knn, probe_linear

    shutil.copytree(init_run, tmp_path / "run")
    run = load_run(tmp_path / "run")
    copy = reestimate_bn(run, "embedded")
    assert copy.bn["images"] == 512 == bn_images(512) and bn_images(10_000) == 9984 and bn_images(100) == 100
    assert _cache_key(run, "embedded", "train", "backbone", {}) != _cache_key(copy, "embedded", "train", "backbone", {})
    assert _classifier_path(run, "embedded", "backbone", _p(1)) != _classifier_path(copy, "embedded", "backbone", _p(1))
    plain, data = probe_knn(run, "embedded"), probe_knn(copy, "embedded")
    assert all("init_bn" not in r and "bn_estimate" not in r for r in plain)
    assert all(r["init_bn"] == "data" and r["bn_estimate"]["images"] == 512 and r["epochs"] == 0 for r in data)
    assert [r["feature"] for r in data] == [r["feature"] for r in plain] and data[0]["protocol"] == plain[0]["protocol"]
    assert len(list((tmp_path / "run" / "features").glob("*.pt"))) == 4  # train and test features of each
    assert plain[0]["value"] != data[0]["value"] or plain[1]["value"] != data[1]["value"]  # other features, other votes
    lin, _ = probe_linear(copy, "embedded", _p(1))
    assert all(r["init_bn"] == "data" for r in lin)


def test_cli_probe_bn_data(init_run, tmp_path):
    from tests.conftest import run_cli_here

    shutil.copytree(init_run, tmp_path / "run")
    p = run_cli_here("probe", "knn", tmp_path / "run", "--bn-data", "--json", "--results", tmp_path / "res")
    assert p.returncode == 0, p.stderr
    recs = json.loads(p.stdout)
    assert {r["metric"] for r in recs} == {"knn/top1", "knn/top5"} and all(r["init_bn"] == "data" for r in recs)
    stored = [json.loads(line) for line in (tmp_path / "res" / "records.jsonl").read_text().splitlines()]
    assert all(r["init_bn"] == "data" for r in stored)


def test_data_options_record_always_says_the_embedded_generator_version():
    """A record of a run pretrained on an embedded dataset says its generator version even at the default (records
    without it were measured on version 1); a run on another dataset (paper scale: ImageNet) says no version, and
    its other options only when they differ from the defaults. An old run's config.yaml without the key: version 1."""
    from cssl_bench.config import load_recipe, recipe_from_dict
    from cssl_bench.eval.probes import data_options_record

    assert data_options_record(load_recipe("moco-v2", "tiny")) == {"data_options": {"embedded_version": 2}}
    assert data_options_record(load_recipe("moco-v2", "small", {}, ["data.embedded_train=512"])) == {
        "data_options": {"embedded_train": 512, "embedded_version": 2}
    }
    assert data_options_record(load_recipe("moco-v2", "tiny", {}, ["data.embedded_version=1"])) == {
        "data_options": {"embedded_version": 1}
    }
    old = load_recipe("moco-v2", "tiny", {}, ["data.embedded_version=1"]).to_dict()
    del old["data"]["embedded_version"]
    assert data_options_record(recipe_from_dict(old)) == {"data_options": {"embedded_version": 1}}
    paper = load_recipe("moco-v2", "paper")
    assert not paper.data.dataset.startswith("embedded") and data_options_record(paper) == {}
    assert data_options_record(load_recipe("moco-v2", "paper", {}, ["data.embedded_train=512"])) == {
        "data_options": {"embedded_train": 512}
    }
