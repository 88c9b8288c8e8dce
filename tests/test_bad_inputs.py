"""The catalogue of bad inputs (issue 9): each case prints one line, exits non-zero, loses nothing.
Cases already covered elsewhere: unknown method/table/protocol/scale/dataset, invalid recipe keys and
types, negative or zero epochs and batch, batch larger than the dataset, missing/empty/non-image
folders (tests/test_cli.py); every PIL mode (tests/test_datasets.py); disk full during a checkpoint
write and non-finite loss (tests/test_reliability.py)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.conftest import FAST_CLI, one_line_error, run_cli

FAST = FAST_CLI


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    for name, method, extra in (
        ("moco", "moco-v2", []),
        ("simclr", "simclr", []),
        ("r18", "moco-v2", ["--backbone", "resnet10-w0.25"]),
    ):
        p = run_cli("pretrain", method, "--epochs", "0", "--out", root / name, *FAST, *extra)
        assert p.returncode == 0, p.stderr
    return root


def _copy(runs, name, tmp_path):
    dst = tmp_path / name
    shutil.copytree(runs / name, dst)
    return dst


def test_corrupted_checkpoint(runs, tmp_path):
    run = _copy(runs, "moco", tmp_path)
    ck = run / "checkpoints" / "last.pt"
    ck.write_bytes(os.urandom(4096))
    one_line_error(run_cli("probe", "knn", run), 1, "corrupted or truncated")


def test_truncated_checkpoint(runs, tmp_path):
    run = _copy(runs, "moco", tmp_path)
    ck = run / "checkpoints" / "last.pt"
    data = ck.read_bytes()
    ck.write_bytes(data[: len(data) // 3])
    one_line_error(run_cli("probe", "knn", run), 1, "corrupted or truncated")


def test_checkpoint_of_another_method(runs, tmp_path):
    run = _copy(runs, "moco", tmp_path)
    shutil.copy(runs / "simclr" / "checkpoints" / "last.pt", run / "checkpoints" / "last.pt")
    one_line_error(run_cli("probe", "knn", run), 1, "is of simclr")


def test_checkpoint_of_another_backbone(runs, tmp_path):
    run = _copy(runs, "moco", tmp_path)
    state = torch.load(runs / "r18" / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    state["backbone"] = "resnet10-w0.125"  # a lying header: the weights still have the other shapes
    torch.save(state, run / "checkpoints" / "last.pt")
    one_line_error(run_cli("probe", "knn", run), 1, "does not match the run's model")
    shutil.copy(runs / "r18" / "checkpoints" / "last.pt", run / "checkpoints" / "last.pt")
    one_line_error(run_cli("probe", "knn", run), 1, "resnet10-w0.25")


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/cssl_bench_pwned",))


def test_checkpoint_that_would_execute_code_is_refused(runs, tmp_path):
    run = _copy(runs, "moco", tmp_path)
    Path("/tmp/cssl_bench_pwned").unlink(missing_ok=True)
    torch.save({"format": "cssl-bench/1", "evil": _Evil()}, run / "checkpoints" / "last.pt")
    one_line_error(run_cli("probe", "knn", run), 1, "refused")
    assert not Path("/tmp/cssl_bench_pwned").exists()


def test_resume_with_another_recipe_and_nothing_to_resume(runs, tmp_path):
    run = _copy(runs, "moco", tmp_path)
    one_line_error(run_cli("pretrain", "simclr", "--epochs", "1", "--out", run, "--resume", *FAST), 1, "another recipe")
    one_line_error(
        run_cli("pretrain", "moco-v2", "--out", tmp_path / "none", "--resume", *FAST), 1, "nothing to resume"
    )


def test_run_directory_without_config(tmp_path):
    (tmp_path / "x").mkdir()
    one_line_error(run_cli("probe", "linear", tmp_path / "x"), 1, "not a cssl-bench run directory")


def test_unknown_feature_for_method(runs):
    one_line_error(
        run_cli("probe", "knn", runs / "moco", "--feature", "concat"), 2, "feature 'concat' is not available"
    )


@pytest.mark.parametrize("key", ["embedded_texture_contrast", "embedded_class_color", "embedded_background_jitter"])
def test_embedded_generator_option_out_of_range(key):
    one_line_error(run_cli("pretrain", "simclr", "--set", f"data.{key}=1.5"), 2, f"data.{key} must be between 0 and 1")


def test_malformed_override():
    one_line_error(run_cli("pretrain", "moco-v2", "--set", "epochs10"), 2, "must look like section.key=value")


def test_truncated_jpeg_fails_or_is_skipped(tmp_path):
    root = tmp_path / "imgs"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(40):
            Image.new("RGB", (40, 40), (i * 5, 100, 0 if c == "a" else 200)).save(root / c / f"{i}.jpg", quality=90)
    bad = root / "a" / "0.jpg"
    bad.write_bytes(bad.read_bytes()[:200])
    args = [
        "pretrain",
        "moco-v2",
        "--dataset",
        f"imagefolder:{root}",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--backbone",
        "resnet10-w0.125",
        "--set",
        "data.workers=0",
        "--quiet",
    ]
    one_line_error(run_cli(*args, "--out", tmp_path / "r1"), 1, "unreadable image")
    p = run_cli(*args, "--out", tmp_path / "r2", "--set", "data.skip_bad=true")
    assert p.returncode == 0, p.stderr


def test_images_smaller_than_the_crop_are_upsampled(tmp_path):
    """Documented behaviour: the random resized crop resizes any crop to the training size."""
    root = tmp_path / "small"
    (root / "a").mkdir(parents=True)
    for i in range(40):
        Image.new("RGB", (8, 6), (i * 5, 0, 0)).save(root / "a" / f"{i}.png")
    p = run_cli(
        "pretrain",
        "simclr",
        "--dataset",
        f"imagefolder:{root}",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--backbone",
        "resnet10-w0.125",
        "--set",
        "data.workers=0",
        "--quiet",
        "--out",
        tmp_path / "r",
    )
    assert p.returncode == 0, p.stderr


def test_corrupted_results_line_is_skipped_with_warning(runs, tmp_path):
    res = tmp_path / "res"
    p = run_cli("probe", "knn", runs / "moco", "--k", "5", "--results", res)
    assert p.returncode == 0, p.stderr
    with open(res / "records.jsonl", "a") as f:
        f.write('{"metric": "knn/top1", "val')  # a torn line, as a killed writer leaves it
    p = run_cli("table", "methods", "--results", res)
    assert p.returncode == 0 and "skipped an unreadable results line" in p.stderr
    p = run_cli("probe", "knn", runs / "moco", "--k", "5", "--results", res)  # appending after a torn line
    assert p.returncode == 0
    good = [
        json.loads(line)
        for line in (res / "records.jsonl").read_text().splitlines()
        if line.startswith('{"') and line.endswith("}")
    ]
    assert len(good) == 4


def test_concurrent_writers_lose_nothing(tmp_path):
    res = tmp_path / "res"
    code = (
        "import sys; from cssl_bench.results.store import ResultsStore; s = ResultsStore(sys.argv[1]);"
        "[s.append([{'metric': 'm', 'value': i, 'writer': sys.argv[2]}]) for i in range(100)]"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(res), str(w)]) for w in range(4)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    lines = (res / "records.jsonl").read_text().splitlines()
    recs = [json.loads(line) for line in lines]
    assert len(recs) == 400 and {(r["writer"], r["value"]) for r in recs} == {
        (str(w), i) for w in range(4) for i in range(100)
    }


def test_results_directory_without_write_permission(runs):
    """As an unprivileged user (root ignores permission bits), a read-only results folder is one line."""
    if not shutil.which("setpriv") or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to run as an unprivileged user")
    root = Path(tempfile.mkdtemp(prefix="cssl_ro_"))
    try:
        shutil.copytree(runs / "moco", root / "run")
        cache = Path(os.environ["CSSL_BENCH_CACHE"])
        shutil.copytree(cache, root / "cache")
        (root / "results").mkdir()
        for p in [root, *root.rglob("*")]:
            p.chmod(p.stat().st_mode | stat.S_IROTH | (stat.S_IXOTH if p.is_dir() else 0))
        (root / "results").chmod(0o555)
        env = {**os.environ, "CSSL_BENCH_CACHE": str(root / "cache"), "HOME": str(root)}
        p = subprocess.run(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                sys.executable,
                "-m",
                "cssl_bench",
                "probe",
                "knn",
                str(root / "run"),
                "--k",
                "5",
                "--results",
                str(root / "results"),
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=str(root),
        )
        one_line_error(p, 1, "permission denied")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_pipeline_without_network(runs, tmp_path):
    """No network access at run time: pretrain and probe inside a network namespace with no interfaces up."""
    if not shutil.which("unshare") or subprocess.run(["unshare", "-n", "true"]).returncode != 0:
        pytest.skip("needs unshare -n (network namespaces)")
    base = ["unshare", "-n", sys.executable, "-m", "cssl_bench"]
    p = subprocess.run(
        [*base, "pretrain", "simclr", "--epochs", "1", "--out", str(tmp_path / "r"), *FAST],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr
    p = subprocess.run(
        [*base, "probe", "knn", str(tmp_path / "r"), "--results", str(tmp_path / "res"), "--json"],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)[0]["metric"] == "knn/top1"
