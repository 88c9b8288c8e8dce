"""The foundation pipeline through the real CLI (pretrain -> knn -> linear -> table) and its error cases."""

import csv
import json

import pytest

SMALL = ["--set", "data.embedded_train=640", "--set", "data.embedded_test=200", "--set", "data.workers=0"]


# SimSiam Table 4's MoCo v2 (the symmetrised loss), so that its probes fill that table's MoCo v2 row
TINY_RUN = (
    "pretrain",
    "moco-v2",
    "--epochs",
    "1",
    "--batch-size",
    "64",
    "--seed",
    "3",
    "--set",
    "params.symmetric=true",
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from tests.conftest import run_cli

    root = tmp_path_factory.mktemp("pipeline")
    out = root / "run"
    p = run_cli(*TINY_RUN, "--out", out, "--quiet", *SMALL)
    assert p.returncode == 0, p.stderr
    return root, out, p


def test_pretrain_writes_run_directory(tiny_run):
    root, out, p = tiny_run
    assert p.stdout.strip().endswith(str(out))
    for f in ("config.yaml", "checkpoints/last.pt", "log.csv", "run.json"):
        assert (out / f).exists(), f
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "complete" and info["epochs_done"] == 1 and info["steps_done"] == 10
    rows = (out / "log.csv").read_text().strip().splitlines()
    assert rows[0].startswith("epoch,step,loss") and len(rows) >= 2
    with open(out / "log.csv") as f:  # the collapse monitor of MoCo's queries: a std of unit vectors' channels
        logged = list(csv.DictReader(f))
    assert all(0 < float(r["z_std"]) <= 1 for r in logged)
    assert info["z_std_step"] == int(logged[-1]["step"]) and info["z_std"] == pytest.approx(
        float(logged[-1]["z_std"]), abs=1e-5
    )
    assert info["z_std_x_sqrt_dim"] == pytest.approx(info["z_std"] * 128**0.5, abs=1e-3)  # MoCo v2: dim 128
    assert info["train_loaders"] == [{"loader": "torchvision"}]  # which loader read the images (FFCV: also its storage)


def test_probe_records_carry_the_checkpoints_collapse_monitor(tiny_run, cli, tmp_path):
    _, out, _ = tiny_run
    p = cli("probe", "knn", out, "--k", "20", "--json", "--results", tmp_path / "res")
    assert p.returncode == 0, p.stderr
    with open(out / "log.csv") as f:
        last = list(csv.DictReader(f))[-1]
    assert json.loads(p.stdout)[0]["pretrain_loader"] == [{"loader": "torchvision"}]
    z = json.loads(p.stdout)[0]["pretrain_z_std"]
    assert z["step"] == int(last["step"]) == 10 and z["value"] == float(last["z_std"])
    assert z["x_sqrt_dim"] == pytest.approx(float(last["z_std"]) * 128**0.5, abs=1e-3)


def test_collapse_warning_threshold():
    from cssl_bench.collapse import COLLAPSED_BELOW, collapse_warning

    assert collapse_warning({"method": "moco-v2", "z_std_x_sqrt_dim": 0.5}) is None
    assert collapse_warning({"method": "supervised"}) is None  # no embedding, no monitor
    w = collapse_warning({"method": "moco-v2", "z_std_x_sqrt_dim": 0.0066, "z_std_step": 156})
    assert "moco-v2's embedding collapsed" in w and "0.0066" in w and "step 156" in w and "\n" not in w
    assert collapse_warning({"z_std_x_sqrt_dim": COLLAPSED_BELOW}) is None


def test_pretrain_warns_about_a_collapsed_run(tiny_run, cli, tmp_path):
    """The CLI reads the run's last z_std back and says so when the embedding collapsed (here a copy of the
    tiny run whose run.json records a collapsed monitor; re-running the same command finds it complete)."""
    import shutil

    _, out, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    info = json.loads((copy / "run.json").read_text())
    assert "warning" not in tiny_run[2].stderr  # the run itself is not collapsed after 10 steps
    (copy / "run.json").write_text(json.dumps({**info, "z_std_x_sqrt_dim": 0.004}))
    p = cli(*TINY_RUN, "--out", copy, "--quiet", *SMALL)
    assert p.returncode == 0 and "already complete" in p.stderr and "embedding collapsed" in p.stderr, p.stderr
    assert p.stdout.strip().endswith(str(copy))


def test_probe_warns_when_the_probed_checkpoint_had_collapsed(tiny_run, cli, tmp_path):
    """A probe reads the z_std logged by its checkpoint's step (log.csv) and warns when it was collapsed; the
    records on stdout (--json) stay clean JSON. A later collapse does not concern an earlier checkpoint."""
    import shutil

    _, out, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    p = cli("probe", "knn", copy, "--k", "20", "--json", "--results", tmp_path / "res")
    assert p.returncode == 0 and "collapsed" not in p.stderr, p.stderr
    with open(copy / "log.csv") as f:
        rows = list(csv.DictReader(f))
    last = int(rows[-1]["step"])
    rows[-1]["z_std"] = "0.0001"  # 0.0001 x sqrt(128) = 0.0011
    rows.append({**rows[-1], "step": str(last + 5), "z_std": "0.0001"})
    with open(copy / "log.csv", "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    p = cli("probe", "knn", copy, "--k", "20", "--json", "--results", tmp_path / "res")
    assert p.returncode == 0 and "embedding collapsed" in p.stderr and f"at step {last}" in p.stderr, p.stderr
    assert json.loads(p.stdout)[0]["metric"] == "knn/top1"
    rows[-2]["z_std"] = "0.05"  # collapsed only after the checkpoint's step: no warning
    with open(copy / "log.csv", "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    p = cli("probe", "knn", copy, "--k", "20", "--json", "--results", tmp_path / "res")
    assert p.returncode == 0 and "collapsed" not in p.stderr, p.stderr


def test_probes_and_table(tiny_run, cli):
    root, out, _ = tiny_run
    res = root / "results"
    p = cli("probe", "knn", out, "--k", "20", "--results", res, "--json")
    assert p.returncode == 0, p.stderr
    recs = json.loads(p.stdout)
    assert {r["metric"] for r in recs} == {"knn/top1", "knn/top5"}
    for r in recs:
        assert {
            "metric",
            "value",
            "method",
            "dataset",
            "scale",
            "epochs",
            "seed",
            "config_hash",
            "protocol",
            "backbone",
        } <= set(r)
        assert r["method"] == "moco-v2" and r["scale"] == "tiny" and r["epochs"] == 1 and r["seed"] == 3
        assert r["protocol"]["k"] == 20 and 0 <= r["value"] <= 100
    p = cli("probe", "linear", out, "--epochs", "5", "--results", res, "--json")
    assert p.returncode == 0, p.stderr
    lin = json.loads(p.stdout)
    assert {r["metric"] for r in lin} == {"linear/top1", "linear/top5"}
    assert lin[0]["protocol"]["name"] == "moco" and lin[0]["protocol"]["epochs"] == 5
    lines = (res / "records.jsonl").read_text().splitlines()
    assert len(lines) == 4
    p = cli("table", "methods", "--results", res)
    assert p.returncode == 0, p.stderr
    top1 = next(r["value"] for r in lin if r["metric"] == "linear/top1")
    moco_row = next(line for line in p.stdout.splitlines() if line.startswith("| MoCo v2"))
    cells = [c.strip() for c in moco_row.strip("|").split("|")]
    # 100-ep column (tiny: 1 epoch): paper | ours | delta, the paper's number beside ours
    assert cells[4:7] == ["67.4", f"{top1:.1f}", f"{top1 - 67.4:+.1f}"]
    assert cells[7] == "69.9" and cells[8] == "–"  # no result at the other budgets
    simclr_row = next(line for line in p.stdout.splitlines() if line.startswith("| SimCLR"))
    assert "66.5" in simclr_row and "–" in simclr_row and "tiny" in p.stdout
    p = cli("table", "simsiam-t4", "--results", res, "--format", "csv", "--compare", "none")
    assert (
        p.returncode == 0
        and p.stdout.splitlines()[0] == "method,batch size,negative pairs,momentum encoder,100 ep,200 ep,400 ep,800 ep"
    )


def test_random_init_baseline_and_resume_refusal(tiny_run, cli):
    root, out, _ = tiny_run
    base = root / "init"
    p = cli("pretrain", "moco-v2", "--epochs", "0", "--out", base, "--quiet", *SMALL)
    assert p.returncode == 0, p.stderr
    assert (base / "checkpoints" / "last.pt").exists()
    p = cli("pretrain", "moco-v2", "--epochs", "1", "--out", base, "--quiet", *SMALL)
    assert p.returncode != 0 and "already holds a run" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize(
    "args,exit_code,message",
    [
        (["pretrain", "mocov9"], 2, "unknown method 'mocov9'; choose from"),
        (["pretrain", "moco-v2", "--dataset", "cifar1000"], 2, "unknown dataset 'cifar1000'; choose from"),
        (["pretrain", "moco-v2", "--scale", "huge"], 2, "unknown scale 'huge'; choose from tiny, small, paper"),
        (["pretrain", "moco-v2", "--precision", "fp8"], 2, "train.precision must be one of fp32, bf16, fp16"),
        (["pretrain", "moco-v2", "--epochs", "-1"], 2, "epochs must be >= 0"),
        (["pretrain", "moco-v2", "--batch-size", "0"], 2, "batch size must be > 0"),
        (["pretrain", "moco-v2", "--set", "optim.nope=1"], 2, "unknown recipe key optim.nope"),
        (["pretrain", "moco-v2", "--epochs", "ten"], 2, "error:"),
        (["table", "nosuchtable"], 2, "unknown table 'nosuchtable'; choose from"),
        (["table", "methods", "--format", "xls"], 2, "unknown format 'xls'"),
        (
            ["probe", "linear", "DIR", "--protocol", "simclr"],
            2,
            "unknown linear protocol 'simclr'; choose from moco, simsiam, looc",
        ),
        (["probe", "knn", "/nonexistent/run"], 1, "run directory /nonexistent/run does not exist"),
        (["pretrain", "moco-v2", "--dataset", "imagefolder:/nonexistent/x"], 1, "does not exist"),
        (["nosuchcommand"], 2, "error:"),
        (["demo", "--seeds", "0"], 2, "--seeds must be an integer >= 1, got 0"),
        (["table", "methods", "--seeds", "-1"], 2, "--seeds must be an integer >= 1, got -1"),
    ],
)
def test_errors_are_one_line(cli, tmp_path, args, exit_code, message):
    args = [str(tmp_path) if a == "DIR" else a for a in args]
    p = cli(*args, "--out", tmp_path / "o") if args[0] == "pretrain" else cli(*args)
    assert p.returncode == exit_code, (p.returncode, p.stderr)
    assert message in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


def test_empty_folder_and_no_images(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    p = cli("pretrain", "moco-v2", "--dataset", f"imagefolder:{tmp_path / 'empty'}", "--out", tmp_path / "o", "--quiet")
    assert p.returncode == 1 and "no images" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    (tmp_path / "txt" / "a").mkdir(parents=True)
    (tmp_path / "txt" / "a" / "notes.txt").write_text("hello")
    p = cli("pretrain", "moco-v2", "--dataset", f"imagefolder:{tmp_path / 'txt'}", "--out", tmp_path / "o2", "--quiet")
    assert p.returncode == 1 and "no images" in p.stderr


def test_batch_larger_than_dataset(cli, tmp_path):
    p = cli("pretrain", "moco-v2", "--batch-size", "1000", "--epochs", "1", "--out", tmp_path / "o", "--quiet", *SMALL)
    assert p.returncode == 2 and "larger than the dataset" in p.stderr


def test_debug_shows_traceback(cli, tmp_path):
    p = cli("--debug", "probe", "knn", tmp_path / "missing")
    assert p.returncode != 0 and "Traceback" in p.stderr


def test_info_and_methods(cli):
    p = cli("info")
    assert p.returncode == 0 and "torch" in p.stdout and "OMP_WAIT_POLICY" in p.stdout
    p = cli("methods")
    assert p.returncode == 0 and "simclr" in p.stdout and "moco-v2" in p.stdout


def test_data_export(cli, tmp_path):
    p = cli("data", "export", "embedded", tmp_path / "img", "--train", "20", "--test", "10")
    assert p.returncode == 0, p.stderr
    assert len(list((tmp_path / "img" / "train").rglob("*.png"))) == 20


@pytest.mark.slow
def test_demo_with_two_seeds(cli, tmp_path):
    """The demo on tiny data under seeds 0 and 1: both random-init baselines, mean ± std per row, Δ against the
    higher baseline, per-seed values, and the methods table of those seeds."""
    p = cli(
        "demo",
        "--out",
        tmp_path / "demo",
        "--epochs",
        "1",
        "--seeds",
        "2",
        "--set",
        "data.embedded_train=256",
        "--set",
        "data.embedded_test=64",
        "--set",
        "data.workers=0",
        "--set",
        "train.batch_size=32",
        "--set",
        "model.backbone=resnet10-w0.125",
        env={"COLUMNS": "200"},
    )
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert (
        "(mean ± std over seeds 0-1)" in out
        and "random init (as initialised)" in out
        and "random init (BN on data)" in out
    )
    assert "Δ against the higher random-init baseline: random init (" in out and "Per seed (0, 1): " in out
    recs = [json.loads(line) for line in (tmp_path / "demo" / "results" / "records.jsonl").read_text().splitlines()]
    assert {r["seed"] for r in recs} == {0, 1}
    bn_data = [r["metric"] for r in recs if r.get("init_bn") == "data"]  # 2 seeds x kNN and linear x top1/top5
    assert sorted(bn_data) == sorted(["knn/top1", "knn/top5", "linear/top1", "linear/top5"] * 2)
    assert "Random init (epoch 0" in out  # the methods table's caption: the higher linear baseline
    assert "Seeds 0-1 only (--seeds 2)." in out


def test_records_table_says_unknown_epochs_not_none(capsys):
    """An imported checkpoint without --epochs has no epoch count: the results table says so in words."""
    from cssl_bench.cli.app import print_records

    rec = {"method": "imported:timm", "dataset": "embedded", "epochs": None, "metric": "knn/top1", "value": 50.0}
    print_records([rec, {**rec, "epochs": 8}], as_json=False)
    out = capsys.readouterr().out
    assert "unknown" in out and "None" not in out and " 8 " in out


def test_ctrl_c_says_interrupted_and_exits_130(monkeypatch, capsys):
    """Ctrl-C in a command (typer turns the KeyboardInterrupt into Exit(130)) prints one line and exits 130."""
    import torch

    from cssl_bench.cli import main

    def interrupt():
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "get_num_threads", interrupt)  # called by `info`
    with pytest.raises(SystemExit) as e:
        main(["info"])
    assert e.value.code == 130 and capsys.readouterr().err.strip().splitlines()[-1] == "interrupted"
