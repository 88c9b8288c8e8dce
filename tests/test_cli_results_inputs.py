"""Bad input to the results commands (table, reproduce): one clear line, the right exit code, nothing lost."""

from __future__ import annotations

import json

import pytest

from cssl_bench.results.store import ResultsStore, make_record
from tests.conftest import run_cli


def _record(value, metric="rotation/acc"):
    r = make_record(
        run_id="r",
        method="moco-v2",
        dataset="embedded",
        pretrain_dataset="embedded",
        scale="small",
        backbone="resnet18-w0.25",
        epochs=8,
        batch=128,
        seed=0,
        feature="backbone",
        protocol={"name": "rotation"},
        metric=metric,
        value=1.0,
        config_hash="h",
        extra={"data_options": {"embedded_version": 2}},
    )
    r["value"] = value
    return r


def test_a_record_whose_value_is_not_a_number_is_skipped_with_a_warning(tmp_path):
    (tmp_path / "records.jsonl").write_text("".join(json.dumps(_record(v)) + "\n" for v in (None, "abc", True, 61.25)))
    p = run_cli("table", "rotation", "--results", tmp_path, "--scale", "small")
    assert p.returncode == 0, p.stderr
    assert p.stderr.count("its value is not a number") == 3 and "Traceback" not in p.stderr
    assert "61.2" in p.stdout  # the good record still fills its cell
    with pytest.warns(UserWarning, match="not a number"):
        assert len(ResultsStore(tmp_path).read()) == 1


def test_table_of_a_missing_store_says_so(tmp_path):
    p = run_cli("table", "rotation", "--results", tmp_path / "nowhere")
    assert p.returncode == 0 and "no results store at" in p.stderr


def test_reproduce_with_an_override_every_run_refuses_exits_2(tmp_path):
    for extra in ([], ["--dry-run"]):
        p = run_cli(
            "reproduce",
            "rotation",
            "--set",
            "optim.nope=1",
            "--results",
            tmp_path / "res",
            "--runs",
            tmp_path / "runs",
            *extra,
        )
        assert p.returncode == 2, p.stderr
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: --set optim.nope=1"), p.stderr
    assert not (tmp_path / "res").exists() and not (tmp_path / "runs").exists()
