"""Bad inputs to `pretrain`, `probe` and `data` found by the CLI audit: each is one `error:` line with a clear
message and the right exit code (2 for bad options), raised before any work, and nothing is written or
overwritten. See docs/reliability.md (the catalogue of bad inputs)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import FAST_CLI, one_line_error, run_cli_here

FAST = FAST_CLI


def snapshot(root: Path) -> dict:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def image_folder(root: Path, n: int = 20, bad: bool = True) -> Path:
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (40, 40), (i * 5, 100, 0 if c == "a" else 200)).save(root / c / f"{i}.jpg", quality=90)
    if bad:
        f = root / "a" / "0.jpg"
        f.write_bytes(f.read_bytes()[:200])
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A run trained one epoch (last.pt and prev.pt), and a random-init run whose probes load data with a worker process."""
    root = tmp_path_factory.mktemp("inputs")
    p = run_cli_here("pretrain", "simclr", "--epochs", "1", "--out", root / "e1", *FAST)
    assert p.returncode == 0, p.stderr
    p = run_cli_here("pretrain", "simclr", "--epochs", "0", "--out", root / "w1", *FAST, "--set", "data.workers=1")
    assert p.returncode == 0, p.stderr
    return root


# 1, 2: an error inside a DataLoader worker is the worker's one line, and its advice names a real option


def test_worker_error_is_one_line_and_skip_bad_exists(tmp_path):
    root = image_folder(tmp_path / "imgs")
    args = [
        "pretrain",
        "simclr",
        "--dataset",
        f"imagefolder:{root}",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--backbone",
        "resnet10-w0.125",
        "--workers",
        "1",
        "--quiet",
    ]
    p = run_cli_here(*args, "--out", tmp_path / "r1")
    one_line_error(p, 1, ["unreadable image", "0.jpg", "--skip-bad"])
    assert "DataLoader worker" not in p.stderr
    p = run_cli_here(*args, "--out", tmp_path / "r2", "--skip-bad")  # the option the message names
    assert p.returncode == 0, p.stderr


def test_probe_worker_error_is_one_line(runs, tmp_path):
    root = image_folder(tmp_path / "imgs")
    p = run_cli_here("probe", "knn", runs / "w1", "--dataset", f"imagefolder:{root}", "--results", tmp_path / "res")
    one_line_error(p, 1, ["unreadable image", "0.jpg"])
    assert "DataLoader worker" not in p.stderr


# 3: an empty imagefolder path


def test_imagefolder_without_a_path(tmp_path):
    p = run_cli_here("pretrain", "simclr", "--dataset", "imagefolder:", "--epochs", "1", "--out", tmp_path / "o", *FAST)
    one_line_error(p, 2, "imagefolder:PATH")
    assert not (tmp_path / "o").exists()


# 4: resume where every checkpoint is damaged


def test_resume_with_both_checkpoints_damaged_touches_nothing(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs / "e1", run)
    for name in ("last.pt", "prev.pt"):
        f = run / "checkpoints" / name
        data = f.read_bytes()
        f.write_bytes(data[: len(data) // 2])
    before = snapshot(run)
    p = run_cli_here("pretrain", "simclr", "--epochs", "1", "--out", run, "--resume", *FAST)
    one_line_error(p, 1, ["last.pt", "prev.pt", "corrupted or truncated", "cannot resume"])
    assert snapshot(run) == before


# 5: bad --set overrides are usage errors naming the override


@pytest.mark.parametrize(
    "override,message",
    [
        ("optim.base_lr=abc", "optim.base_lr: expected float"),
        ("train.epochs=1.5", "train.epochs: expected int"),
        ("optim.base_lr=[1", "override 'optim.base_lr=[1'"),
    ],
)
def test_bad_override_exits_2(tmp_path, override, message):
    p = run_cli_here("pretrain", "simclr", "--set", override, "--out", tmp_path / "o", *FAST)
    one_line_error(p, 2, message)
    assert not (tmp_path / "o").exists()


# 6, 7: option values that used to give raw exceptions, or were silently ignored: one line, exit 2, before any work


@pytest.mark.parametrize(
    "args,message",
    [
        (["--save-epochs", "a,b"], "--save-epochs 'a,b'"),
        (["--save-epochs", "5", "--epochs", "1"], "epoch 5 is beyond the run's 1 epochs"),
        (["--workers", "-1", "--epochs", "1"], "data.workers (--workers) must be >= 0"),
        (["--lr", "-1"], "optim.base_lr (--lr) must be"),
        (["--set", "train.log_every=0"], "train.log_every must be >= 1"),
        (["--set", "data.embedded_size=0"], "data.embedded_size must be at least 8"),
        (["--augment", "texture"], "--augment applies only to the LooC methods"),
        (["--variance-heads", "none"], "--variance-heads applies only to the LooC methods"),
        (["--nnodes", "2"], "--nnodes needs --nproc"),
        (
            ["--nproc", "2", "--nnodes", "2", "--node-rank", "2", "--rdzv-endpoint", "node0:29400"],
            "--node-rank must be in 0..1",
        ),
        (
            ["--nproc", "2", "--nnodes", "2", "--node-rank", "-1", "--rdzv-endpoint", "node0:29400"],
            "--node-rank must be in 0..1",
        ),
        (["--nproc", "2", "--nnodes", "2", "--rdzv-endpoint", "nohostport"], "must be HOST:PORT"),
    ],
)
def test_bad_pretrain_option_exits_2_before_any_work(tmp_path, args, message):
    fast = _without_set(FAST, "data.workers=0") if "--workers" in args else FAST  # a --set wins over --workers
    p = run_cli_here("pretrain", "simclr", *fast, *args, "--out", tmp_path / "o")
    one_line_error(p, 2, message)
    assert not (tmp_path / "o").exists()


def _without_set(args: list[str], value: str) -> list[str]:
    out, i = [], 0
    while i < len(args):
        if args[i] == "--set" and args[i + 1] == value:
            i += 2
            continue
        out.append(args[i])
        i += 1
    return out


def test_fp16_on_cpu_warns_once(tmp_path):
    # a CPU run also where a GPU is present: the process sees none (a subprocess, as env is set)
    p = run_cli_here(
        "pretrain",
        "simclr",
        "--precision",
        "fp16",
        "--epochs",
        "0",
        "--out",
        tmp_path / "o",
        *FAST,
        env={"CUDA_VISIBLE_DEVICES": ""},
    )
    assert p.returncode == 0, p.stderr
    warnings = [ln for ln in p.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "fp16" in warnings[0] and "slow" in warnings[0], p.stderr


# 6: an empty config.yaml in a run directory


def test_empty_config_yaml(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs / "e1", run)
    (run / "config.yaml").write_text("")
    before = snapshot(run)
    one_line_error(run_cli_here("probe", "knn", run, "--results", tmp_path / "res"), 1, "config.yaml is empty")
    one_line_error(
        run_cli_here("pretrain", "simclr", "--epochs", "1", "--out", run, "--resume", *FAST), 1, "config.yaml is empty"
    )
    assert snapshot(run) == before


# 6, 8: data export


@pytest.mark.parametrize(
    "args,message",
    [
        (["--size", "0"], "--size must be one of 32, 64"),
        (["--size", "48"], "--size must be one of 32, 64"),
        (["--train", "-5"], "--train must be >= 1"),
    ],
)
def test_export_bad_numbers(tmp_path, args, message):
    p = run_cli_here("data", "export", "embedded", tmp_path / "out", *args)
    one_line_error(p, 2, message)
    assert not (tmp_path / "out").exists()


def test_export_onto_a_file_or_unwritable_place(tmp_path):
    f = tmp_path / "afile"
    f.write_text("keep me")
    one_line_error(run_cli_here("data", "export", "embedded", f, "--train", "20", "--test", "10"), 2, "is a file")
    assert f.read_text() == "keep me"
    one_line_error(
        run_cli_here("data", "export", "embedded", f / "sub", "--train", "20", "--test", "10"),
        2,
        "cannot write to the output folder",
    )
    assert f.read_text() == "keep me"


def test_export_into_a_read_only_folder():
    """As an unprivileged user (root ignores permission bits)."""
    if not shutil.which("setpriv") or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to run as an unprivileged user")
    root = Path(tempfile.mkdtemp(prefix="cssl_ro_"))
    try:
        (root / "ro").mkdir()
        root.chmod(0o755)
        (root / "ro").chmod(0o555)
        env = {**os.environ, "CSSL_BENCH_CACHE": str(root / "ro" / "cache"), "HOME": str(root)}
        p = subprocess.run(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                sys.executable,
                "-m",
                "cssl_bench",
                "data",
                "export",
                "embedded",
                str(root / "ro" / "out"),
                "--train",
                "20",
                "--test",
                "10",
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=str(root),
            timeout=300,
        )
        one_line_error(p, 2, ["cannot write to the output folder", "Permission denied"])
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_export_never_mixes_with_or_deletes_other_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("user file")
    p = run_cli_here("data", "export", "embedded", out, "--train", "20", "--test", "10")
    one_line_error(p, 2, "is not empty")
    assert [x.name for x in out.iterdir()] == ["mine.txt"]

    fresh = tmp_path / "fresh"
    p = run_cli_here("data", "export", "embedded", fresh, "--train", "20", "--test", "10")
    assert p.returncode == 0 and "wrote 30 images" in p.stderr, p.stderr
    assert len(list(fresh.rglob("*.png"))) == 30
    p = run_cli_here(
        "data", "export", "embedded", fresh, "--train", "20", "--test", "10"
    )  # the same export again: rewritten
    assert p.returncode == 0, p.stderr
    assert len(list(fresh.rglob("*.png"))) == 30
    before = snapshot(fresh)
    p = run_cli_here("data", "export", "embedded", fresh, "--train", "40", "--test", "10")  # other options: refused
    one_line_error(p, 2, "previous export of other options")
    assert snapshot(fresh) == before


# 9: data convert's help names real options only


def test_convert_help_names_no_missing_option():
    p = run_cli_here("data", "convert", "--help", env={"COLUMNS": "250", "TERM": "dumb", "NO_COLOR": "1"})
    assert p.returncode == 0, p.stderr
    assert "--loader" not in p.stdout and "data.loader" in p.stdout, p.stdout


def test_any_worker_error_is_reduced_to_its_last_line():
    from cssl_bench.cli import _unwrap_worker_error

    text = (
        "Caught RuntimeError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n    f()\nRuntimeError: shape [3, 32, 32] is invalid\n'
    )
    assert _unwrap_worker_error(text) == ("RuntimeError", "shape [3, 32, 32] is invalid")
    assert _unwrap_worker_error("a plain message") == (None, "a plain message")
