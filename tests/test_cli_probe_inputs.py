"""Bad input to `probe`, `evaluate`, `transfer detection` and `export`: one `error:` line, the right exit status,
refused before any work (no features extracted, no dataset built) and nothing appended to the results store.
Also: the run_dir help text and the progress bars of feature extraction and linear-probe training."""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from tests.conftest import FAST_CLI, one_line_error, run_cli_here

FAST = FAST_CLI
SEED_RECORD = '{"metric": "knn/top1", "value": 1.0}\n'


@pytest.fixture
def cli():
    """These commands are refused before any work: called in this process (conftest.run_cli_here)."""
    return run_cli_here


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """An --epochs 0 MoCo v2 run (random init, a few seconds); tests that must not do work probe it directly and
    check that it gained no features/ folder, tests that do work probe a copy."""
    from tests.conftest import run_cli

    out = tmp_path_factory.mktemp("probe_inputs") / "run"
    p = run_cli("pretrain", "moco-v2", "--epochs", "0", "--out", out, *FAST)
    assert p.returncode == 0, p.stderr
    return out


@pytest.fixture
def res(tmp_path):
    """A results store holding one record: a refused command must leave it byte for byte."""
    d = tmp_path / "res"
    d.mkdir()
    (d / "records.jsonl").write_text(SEED_RECORD)
    return d


def untouched(run: Path, res: Path) -> None:
    assert (res / "records.jsonl").read_text() == SEED_RECORD
    assert not (run / "features").exists(), "work was done before the error"


# ------------------------------------------------------------------------------------------- 1, 4: option ranges


@pytest.mark.parametrize(
    "args,message",
    [
        (["probe", "knn", "RUN", "--k", "0"], "--k must be an integer >= 1, got 0"),
        (["probe", "knn", "RUN", "--k", "-5"], "--k must be an integer >= 1, got -5"),
        (["probe", "knn", "RUN", "--temperature", "0"], "--temperature must be a positive number"),
        (["probe", "knn", "RUN", "--temperature", "-1"], "--temperature must be a positive number"),
        (["probe", "linear", "RUN", "--epochs", "-2"], "--epochs must be an integer >= 1, got -2"),
        (["probe", "linear", "RUN", "--epochs", "0"], "--epochs must be an integer >= 1, got 0"),
        (["probe", "linear", "RUN", "--batch-size", "-1"], "--batch-size must be an integer >= 1, got -1"),
        (["probe", "linear", "RUN", "--batch-size", "0"], "--batch-size must be an integer >= 1, got 0"),
        (["probe", "linear", "RUN", "--lr", "-1"], "--lr must be a positive number"),
        (["probe", "rotation", "RUN", "--limit", "0"], "--limit must be an integer >= 1"),
        (["probe", "fewshot", "RUN", "--C", "-1"], "--C must be a positive number"),
        (["probe", "fewshot", "RUN", "--trials", "0"], "--trials must be an integer >= 1"),
        (
            ["evaluate", "RUN", "--probe", "linear", "--linear-epochs", "-3"],
            "--linear-epochs must be an integer >= 1, got -3",
        ),
        (["evaluate", "RUN", "--trials", "0"], "--trials must be an integer >= 1"),
        (
            ["evaluate", "RUN", "--probe", "nope"],
            "unknown --probe 'nope'; choose from linear, rotation, finegrained, fewshot, corruption, objectnet, knn",
        ),
    ],
)
def test_bad_probe_options_are_refused_before_any_work(pristine, res, cli, args, message):
    p = cli(*[pristine if a == "RUN" else a for a in args], "--results", res)
    one_line_error(p, 2, message)
    untouched(pristine, res)


def test_unknown_probe_in_a_dry_run(pristine, cli):
    p = cli("evaluate", pristine, "--probe", "nope", "--dry-run")
    one_line_error(p, 2, "unknown --probe 'nope'; choose from linear, rotation")
    assert p.stdout == ""
    p = cli("evaluate", pristine, "--suite", "simsiam", "--probe", "knn", "--dry-run")
    one_line_error(p, 2, "suite simsiam has no probe knn")
    p = cli(
        "evaluate", pristine, "--suite", "looc", "--probe", "fewshot", "--dry-run"
    )  # a valid one still lists its step
    assert p.returncode == 0 and p.stdout.strip() == "fewshot on embedded-fine", p.stderr


def test_protocol_objects_validate_for_every_entry_point():
    """The checks live in the option objects, so `reproduce` and library callers get them too."""
    from cssl_bench import UserError
    from cssl_bench.eval.fewshot import FewShotProtocol
    from cssl_bench.eval.linear import get_protocol
    from cssl_bench.eval.suite import SuiteOptions, check_options

    for kw in ({"epochs": 0}, {"batch_size": -1}, {"lr": 0.0}, {"lr": float("nan")}, {"feature_norm": "l2"}):
        with pytest.raises(UserError) as e:
            get_protocol("looc").with_overrides(**kw)
        assert e.value.exit_code == 2
    assert get_protocol("looc").with_overrides(epochs=20).milestones == [12, 16]
    with pytest.raises(UserError, match="--linear-epochs"):
        check_options(SuiteOptions(linear_epochs=0))
    with pytest.raises(UserError, match="kNN k"):
        check_options(SuiteOptions(knn_k=0))
    for kw in ({"C": 0.0}, {"shots": [0]}, {"shots": []}, {"trials": 0}, {"pool": "test"}, {"ci": "z"}):
        with pytest.raises(UserError):
            FewShotProtocol(**kw)


# --------------------------------------------------------------------------------------- 2: unwritable results


def _permission_denied_dir(tmp_path: Path) -> Path | None:
    """A folder this process may not create files in (root ignores permission bits: then try sysfs)."""
    d = tmp_path / "read-only"
    d.mkdir()
    d.chmod(0o555)
    for cand in (d, Path("/sys")):
        try:
            fd, tmp = tempfile.mkstemp(dir=cand)
        except PermissionError:
            return cand
        except OSError:
            continue
        os.close(fd)
        os.unlink(tmp)
    return None


@pytest.mark.parametrize(
    "command", [["probe", "linear", "RUN", "--epochs", "1"], ["evaluate", "RUN", "--probe", "knn"]]
)
def test_unwritable_results_store_fails_before_the_probe(pristine, tmp_path, cli, command):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    p = cli(*[pristine if a == "RUN" else a for a in command], "--results", blocker / "results")
    one_line_error(p, 1, "cannot write to the results directory", "nothing was run")
    assert not (pristine / "features").exists(), "the probe ran although its records could not be stored"
    ro = _permission_denied_dir(tmp_path)
    if ro is None:
        return
    p = cli(*[pristine if a == "RUN" else a for a in command], "--results", ro)
    one_line_error(p, 1, "permission denied")
    assert not (pristine / "features").exists()


def test_missing_results_folder_is_created(pristine, tmp_path, cli):
    run = tmp_path / "run"
    shutil.copytree(pristine, run)
    p = cli("probe", "knn", run, "--k", "5", "--results", tmp_path / "new" / "results", "--json")
    assert p.returncode == 0, p.stderr
    assert len((tmp_path / "new" / "results" / "records.jsonl").read_text().splitlines()) == 2
    assert not list((tmp_path / "new" / "results").glob(".cssl-write-check-*"))


# ---------------------------------------------------------------------------------- 3: detection before work


@pytest.mark.parametrize(
    "args,message",
    [
        (["--arch", "nope"], "unknown --arch 'nope'; choose from c4, fpn"),
        (["--task", "nope"], "unknown --task 'nope'; choose from box, instance"),
        (["--opt", "roi_batch=abc"], "detection option roi_batch must be an integer, got 'abc'"),
    ],
)
def test_detection_options_are_checked_before_the_dataset_is_built(pristine, res, tmp_path, cli, args, message):
    cache = tmp_path / "cache"
    p = cli(
        "transfer",
        "detection",
        pristine,
        "--iterations",
        "2",
        "--quiet",
        *args,
        "--results",
        res,
        env={"CSSL_BENCH_CACHE": str(cache)},
    )
    one_line_error(p, 2, message)
    assert not cache.exists() or not any(cache.iterdir()), "the detection dataset was built before the error"
    assert (res / "records.jsonl").read_text() == SEED_RECORD


# ------------------------------------------------------------------------------------- 7: export's own message


def test_export_write_errors_speak_of_the_export(pristine, tmp_path, cli):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    line = one_line_error(
        cli("export", pristine, "--to", "timm", blocker / "w.pt"), 1, "export", "nothing was exported"
    )
    assert "checkpoint" not in line
    out = tmp_path / "w.pt"
    line = one_line_error(
        cli("export", pristine, "--to", "timm", out, env={"CSSL_BENCH_FAULT": "enospc:1"}),
        1,
        f"could not write the export {out} (No space left on device)",
    )
    assert "previous checkpoint" not in line and not out.exists()
    ro = _permission_denied_dir(tmp_path)
    if ro is not None:
        line = one_line_error(
            cli("export", pristine, "--to", "timm", ro / "w.pt"), 1, "cannot write the export", "permission denied"
        )
        assert "previous checkpoint" not in line


# ----------------------------------------------------------------------------------------- 6: run_dir help


@pytest.mark.parametrize("command", [["probe", "knn"], ["probe", "linear"], ["probe", "fewshot"], ["evaluate"]])
def test_run_dir_has_help(cli, command):
    p = cli(*command, "--help", env={"COLUMNS": "200", "TERM": "dumb"})
    assert p.returncode == 0 and "a pretraining run directory" in p.stdout, p.stdout


# --------------------------------------------------------------------------------------------- 5: progress


def test_progress_bars_on_a_terminal_only(pristine, tmp_path, cli):
    run = tmp_path / "run"
    shutil.copytree(pristine, run)
    args = ("probe", "linear", run, "--epochs", "2", "--results", tmp_path / "res", "--json")
    p = cli(*args, env={"TTY_COMPATIBLE": "1"})  # rich: stderr counts as a terminal
    assert p.returncode == 0, p.stderr
    assert "features (backbone" in p.stderr and "linear probe (moco, 2 epochs)" in p.stderr
    shutil.rmtree(run / "features")
    q = cli(*args, env={"TTY_COMPATIBLE": "0"})  # not a terminal (a log file, a test): nothing on stderr
    assert q.returncode == 0 and q.stderr == "", q.stderr
    assert [r["value"] for r in json.loads(p.stdout)] == [r["value"] for r in json.loads(q.stdout)]


def test_progress_does_not_change_the_linear_probe():
    from rich.console import Console

    from cssl_bench.eval import progress
    from cssl_bench.eval.linear import fit_linear, get_protocol

    g = torch.Generator().manual_seed(0)
    f, y = torch.randn(300, 16, generator=g), torch.arange(300) % 5
    p = get_protocol("looc").with_overrides(epochs=3, batch_size=64, augment=False)
    quiet = fit_linear(f, y, p, 5)
    buf = io.StringIO()
    progress.enable(Console(file=buf, force_terminal=True, width=120))
    try:
        shown = fit_linear(f, y, p, 5)
    finally:
        progress.enable(None)
    assert "linear probe (looc, 3 epochs)" in buf.getvalue()
    assert torch.equal(quiet.fc.weight, shown.fc.weight) and torch.equal(quiet.fc.bias, shown.fc.bias)
    assert not progress.enabled()


def test_fewshot_progress_counts_trials_and_changes_nothing():
    from rich.console import Console

    from cssl_bench.eval import progress
    from cssl_bench.eval.fewshot import FewShotProtocol, fewshot_eval

    g = torch.Generator().manual_seed(0)
    f, y = torch.randn(120, 8, generator=g), torch.arange(120) % 4
    p = FewShotProtocol(shots=[1, 2], trials=3)
    quiet = fewshot_eval(f, y, f, y, p)
    buf = io.StringIO()
    progress.enable(Console(file=buf, force_terminal=True, width=120))
    try:
        shown = fewshot_eval(f, y, f, y, p)
    finally:
        progress.enable(None)
    assert "few-shot (1, 2 shots x 3 trials)" in buf.getvalue() and "/6" in buf.getvalue()
    assert shown == quiet


def test_probe_linear_takes_the_scales_protocol_defaults(pristine, tmp_path, cli):
    """`probe linear --protocol simsiam` on a tiny run trains as reproduce does at tiny (LinearProtocol.for_scale:
    the literal epochs as passes, no paper_train_images), with the command's options on top."""
    from cssl_bench.eval.linear import get_protocol

    run = tmp_path / "run"
    shutil.copytree(pristine, run)
    p = cli("probe", "linear", run, "--protocol", "simsiam", "--epochs", "2", "--results", tmp_path / "res", "--json")
    assert p.returncode == 0, p.stderr
    recs = json.loads(p.stdout)
    assert recs[0]["protocol"] == get_protocol("simsiam").for_scale("tiny").with_overrides(epochs=2).record()
    assert "paper_train_images" not in recs[0]["protocol"]
