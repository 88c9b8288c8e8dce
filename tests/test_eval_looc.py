"""Feature kinds of a tiny LooC++ run (colour + rotation: 3 heads) and `evaluate --suite all` on it."""

import json

import pytest
import torch

SMALL = ["--set", "data.embedded_train=640", "--set", "data.embedded_test=200", "--set", "data.workers=0"]


@pytest.fixture(scope="module")
def looc_run(tmp_path_factory):
    from tests.conftest import run_cli

    out = tmp_path_factory.mktemp("eval-looc") / "looc++"
    p = run_cli(
        "pretrain",
        "looc++",
        "--augment",
        "color,rotation",
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--out",
        out,
        "--quiet",
        *SMALL,
    )
    assert p.returncode == 0, p.stderr
    return out


@pytest.fixture(scope="module")
def run(looc_run):
    from cssl_bench.eval.features import load_run

    return load_run(looc_run)


def test_looc_plus_plus_feature_dimensions_of_a_run(run):
    from cssl_bench.eval.features import features

    v, hidden, dim = run.method.feat_dim, run.method.p.hidden, run.method.p.dim
    assert len(run.method.heads) == 3 and run.default_feature == "concat"
    expected = {
        "backbone": v,
        "head:0": hidden,
        "head:2": hidden,
        "head:1:out": dim,
        "concat": 3 * hidden,
        "concat:out": 3 * dim,
        "concat:hidden+v": 3 * hidden + v,
    }
    got = {k: tuple(features(run, "embedded", "test", k)[0].shape) for k in expected}
    assert got == {k: (200, d) for k, d in expected.items()}
    f_concat = features(run, "embedded", "test", "concat")[0]
    heads = [features(run, "embedded", "test", f"head:{i}")[0] for i in range(3)]
    assert torch.allclose(f_concat, torch.cat(heads, dim=1), atol=1e-5)


def test_probe_records_carry_feature_and_augmentations(run):
    from cssl_bench.eval.linear import get_protocol
    from cssl_bench.eval.rotation import probe_rotation

    recs = probe_rotation(run, "embedded", get_protocol("looc").with_overrides(epochs=2), limit=20)
    assert (
        recs[0]["feature"] == "concat" and recs[0]["augment"] == ["color", "rotation"] and recs[0]["method"] == "looc++"
    )
    recs = probe_rotation(run, "embedded", get_protocol("looc").with_overrides(epochs=2), feature="head:1", limit=20)
    assert recs[0]["feature"] == "head:1"


def test_unknown_head_fails_with_one_line(looc_run, capsys, tmp_path):
    from cssl_bench.cli import main

    with pytest.raises(SystemExit) as e:
        main(["probe", "linear", str(looc_run), "--feature", "head:7", "--results", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "head:7" in err and len(err.strip().splitlines()) == 1


def test_evaluate_suite_all_on_looc_with_subsets(looc_run, cli, tmp_path):
    p = cli(
        "evaluate",
        looc_run,
        "--suite",
        "all",
        "--feature",
        "concat:out",
        "--linear-epochs",
        "2",
        "--rotation-limit",
        "20",
        "--corruptions",
        "contrast,snow",
        "--severities",
        "4-5",
        "--limit",
        "20",
        "--shots",
        "1",
        "--trials",
        "2",
        "--json",
        "--results",
        tmp_path,
    )
    assert p.returncode == 0, p.stderr
    recs = json.loads(p.stdout)
    prefixes = {r["metric"].split("/")[0] for r in recs}
    assert prefixes == {"linear", "rotation", "finegrained", "fewshot", "corruption", "objectnet", "knn"}
    assert {r["feature"] for r in recs} == {"concat:out"} and {r["method"] for r in recs} == {"looc++"}
    corr = {r["metric"] for r in recs if r["metric"].startswith("corruption/")}
    assert corr == {
        "corruption/contrast/s4",
        "corruption/contrast/s5",
        "corruption/snow/s4",
        "corruption/snow/s5",
        "corruption/digital",
        "corruption/weather",
        "corruption/all",
        "corruption/d>3",
    }


@pytest.mark.slow
def test_evaluate_suite_all_defaults_on_looc(looc_run, cli, tmp_path):
    p = cli("evaluate", looc_run, "--suite", "all", "--json", "--results", tmp_path)
    assert p.returncode == 0, p.stderr
    metrics = {r["metric"] for r in json.loads(p.stdout)}
    assert len([m for m in metrics if m.count("/") == 2 and m.startswith("corruption/")]) == 75
    assert {
        "rotation/acc",
        "fewshot/5shot",
        "fewshot/10shot",
        "objectnet/top1",
        "finegrained/top1",
        "linear/top1",
        "knn/top1",
    } <= metrics
