"""benchmarks/learning.py's bookkeeping: which run a recipe key pretrains, which feature it probes, the margins."""

from __future__ import annotations

import json

from tests.conftest import load_benchmark


def test_loocpp_probes_the_looc_run_concat_feature_and_margins_use_the_higher_baseline(tmp_path, monkeypatch):
    """LooC++ is the LooC model read out through its heads' concatenation: learning.py must pretrain (or reuse) the
    `looc` run of the same seed and probe its `concat` feature, not pretrain a `looc++` recipe; the margin is the
    mean minus the higher of the two random-init baselines."""
    learning = load_benchmark("learning")
    pretrained, probed = [], []

    def fake_pretrain(recipe, run_dir):
        pretrained.append((recipe.method, recipe.train.seed, recipe.train.epochs, run_dir.name))
        return {"minutes": 1.0, "steps": 10, "images_per_s": 5.0, "precision": "fp32", "z_std_x_sqrt_dim": 0.9}

    def fake_probe(run_dir, dataset, bn_data=False, nuisance=False, feature=None):
        probed.append((run_dir.name, bn_data, feature))
        if run_dir.name.startswith("init-"):  # baselines: as initialised 40 / 30, BN on data 35 / 33
            return {"knn": 35.0, "linear": 33.0} if bn_data else {"knn": 40.0, "linear": 30.0}
        seed = len([p for p in probed if not p[0].startswith("init-")]) - 1
        return {"knn": 50.0 + seed, "linear": 60.0 + 2 * seed}

    monkeypatch.setattr(learning, "_pretrain", fake_pretrain)
    monkeypatch.setattr(learning, "_probe", fake_probe)
    out = tmp_path / "l.json"
    result = learning.main(
        [
            "--scale",
            "small",
            "--methods",
            "looc++",
            "--seeds",
            "2",
            "--runs",
            str(tmp_path / "runs"),
            "--json",
            str(out),
        ]
    )
    trained = [p for p in pretrained if p[2] != 0]  # the epoch-0 baseline runs aside
    assert [(m, s) for m, s, _, _ in trained] == [("looc", 0), ("looc", 1)]
    assert all(name.startswith("looc-") for *_, name in trained)
    assert [f for name, _, f in probed if not name.startswith("init-")] == ["concat", "concat"]
    entry = json.loads(out.read_text())["methods"]["looc++"]
    assert entry == result["methods"]["looc++"]
    assert entry["feature"] == "concat" and entry["runs"] == [t[3] for t in trained]
    assert entry["knn"]["values"] == [50.0, 51.0] and entry["knn"]["margin_vs_best_init"] == 50.5 - 40.0
    assert entry["linear"]["values"] == [60.0, 62.0] and entry["linear"]["margin_vs_best_init"] == 61.0 - 33.0


def test_a_plain_method_pretrains_its_own_recipe_and_probes_its_default_feature(tmp_path, monkeypatch):
    learning = load_benchmark("learning")
    seen = []
    monkeypatch.setattr(
        learning,
        "_pretrain",
        lambda recipe, run_dir: (
            seen.append((recipe.method, run_dir.name))
            or {"minutes": 1.0, "steps": 1, "images_per_s": None, "precision": "bf16", "z_std_x_sqrt_dim": None}
        ),
    )
    monkeypatch.setattr(
        learning,
        "_probe",
        lambda run_dir, dataset, bn_data=False, nuisance=False, feature=None: (
            seen.append(feature) or {"knn": 1.0, "linear": 2.0}
        ),
    )
    result = learning.main(
        [
            "--scale",
            "tiny",
            "--methods",
            "looc",
            "--seeds",
            "1",
            "--no-baseline",
            "--runs",
            str(tmp_path),
            "--json",
            str(tmp_path / "x.json"),
        ]
    )
    assert seen[0][0] == "looc" and seen[0][1].startswith("looc-") and seen[1] is None
    assert result["methods"]["looc"]["feature"] == "default" and result["methods"]["looc"]["precision"] == "bf16"
    assert "margin_vs_best_init" not in result["methods"]["looc"]["knn"]


def test_a_bad_recipe_key_is_one_line_and_a_nonzero_exit(tmp_path):
    """A mistyped --set (here a key inside a dict-valued section) reaches the user as one line, not a traceback."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    p = subprocess.run(
        [
            sys.executable,
            str(root / "benchmarks" / "learning.py"),
            "--scale",
            "tiny",
            "--methods",
            "swav",
            "--set",
            "augment.color.p=0",
            "--no-baseline",
            "--runs",
            str(tmp_path / "runs"),
            "--json",
            str(tmp_path / "out.json"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
        cwd=tmp_path,
        timeout=300,
    )
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown recipe key augment.color.p"), p.stderr[-2000:]
    assert "Traceback" not in p.stderr and not (tmp_path / "out.json").exists()
