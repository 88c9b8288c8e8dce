"""Methods defined outside the package: the example VICReg plugin (examples/cssl_bench_vicreg) through an entry
point and through --method-file, end to end with the real CLI; its rows in the paper tables; plugin errors.

The entry point is made without pip, as an installed distribution is found: a ``cssl_bench_vicreg-0.1.0.dist-info``
folder (METADATA, entry_points.txt) on the path, beside the example package's folder, which importlib.metadata
discovers (PYTHONPATH for the CLI subprocesses, ``sys.path`` for the in-process checks).
"""

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from cssl_bench import UserError
from tests.conftest import FAST_CLI, one_line_error, run_cli, run_cli_here

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cssl_bench_vicreg"
MODULE = EXAMPLE / "cssl_bench_vicreg" / "__init__.py"
RECIPE = EXAMPLE / "cssl_bench_vicreg" / "vicreg.yaml"


def make_dist(site: Path, name: str, version: str, entry_points: dict[str, str]) -> Path:
    """An installed distribution's metadata: what `pip install` leaves in site-packages, minus the code."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[cssl_bench.methods]\n{lines}")
    return info


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(environment for the CLI with the example plugin installed, folder for its runs and results)."""
    root = tmp_path_factory.mktemp("plugin")
    make_dist(root / "site", "cssl-bench-vicreg", "0.1.0", {"vicreg": "cssl_bench_vicreg:VICReg"})
    path = os.pathsep.join([str(root / "site"), str(EXAMPLE), os.environ.get("PYTHONPATH", "")])
    return {"PYTHONPATH": path, "CSSL_BENCH_RESULTS": str(root / "results")}, root


@pytest.fixture
def in_process(tmp_path, monkeypatch):
    """The example plugin installed for this process (sys.path), and the plugin registries emptied afterwards."""
    from cssl_bench import config
    from cssl_bench.methods import plugins

    make_dist(tmp_path / "site", "cssl-bench-vicreg", "0.1.0", {"vicreg": "cssl_bench_vicreg:VICReg"})
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(config, "_PLUGIN_RECIPES", {})
    monkeypatch.setattr(plugins, "_LOADED", {})
    return tmp_path


# --- the example's loss against a hand-written reference ------------------------------------------------------
def reference_vicreg(z1, z2, lam=25.0, mu=25.0, nu=1.0):
    """VICReg's terms written out element by element (Bardes et al. 2022, sec. 3.1; variance averaged over the two
    branches and covariance summed, as the authors' code), in float64."""
    n, d = len(z1), len(z1[0])
    inv = sum((z1[i][j] - z2[i][j]) ** 2 for i in range(n) for j in range(d)) / (n * d)

    def var(z):
        total = 0.0
        for j in range(d):
            m = sum(z[i][j] for i in range(n)) / n
            v = sum((z[i][j] - m) ** 2 for i in range(n)) / (n - 1)
            total += max(0.0, 1.0 - (v + 1e-4) ** 0.5)
        return total / d

    def cov(z):
        means = [sum(z[i][j] for i in range(n)) / n for j in range(d)]
        total = 0.0
        for a in range(d):
            for b in range(d):
                if a != b:
                    c = sum((z[i][a] - means[a]) * (z[i][b] - means[b]) for i in range(n)) / (n - 1)
                    total += c**2
        return total / d

    v, c = (var(z1) + var(z2)) / 2, cov(z1) + cov(z2)
    return lam * inv + mu * v + nu * c, inv, v, c


def test_vicreg_loss_matches_reference_and_analytic_values(monkeypatch):
    import importlib

    monkeypatch.syspath_prepend(str(EXAMPLE))
    vicreg_loss = importlib.import_module("cssl_bench_vicreg").vicreg_loss
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(6, 5, generator=g, dtype=torch.float64) * 0.7
    z2 = z1 + 0.3 * torch.randn(6, 5, generator=g, dtype=torch.float64)
    out = vicreg_loss(z1, z2)
    total, inv, var, cov = reference_vicreg(z1.tolist(), z2.tolist())
    assert float(out["invariance"]) == pytest.approx(inv, rel=1e-9)
    assert float(out["variance"]) == pytest.approx(var, rel=1e-9) and var > 0  # std 0.7 < 1: the hinge is active
    assert float(out["covariance"]) == pytest.approx(cov, rel=1e-9)
    assert float(out["loss"]) == pytest.approx(total, rel=1e-9)
    # other coefficients weight the same terms
    w = vicreg_loss(z1, z2, 1.0, 2.0, 3.0)
    assert float(w["loss"]) == pytest.approx(inv + 2 * var + 3 * cov, rel=1e-9)
    # analytic: identical views with uncorrelated unit-variance dimensions cost nothing (up to eps in the std) ...
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64) * (3 / 4) ** 0.5
    assert float(vicreg_loss(z, z.clone())["loss"]) == pytest.approx(0.0, abs=1e-12)
    # ... and a collapsed embedding pays mu * (1 - sqrt(eps)) and nothing else
    c = torch.ones(4, 3, dtype=torch.float64)
    assert float(vicreg_loss(c, c.clone())["loss"]) == pytest.approx(25 * (1 - 1e-2), rel=1e-9)


# --- end to end through the CLI ------------------------------------------------------------------------------
def test_entry_point_plugin_end_to_end(installed, tmp_path):
    """methods lists it; it pretrains, reloads for the kNN and linear probes, and its row joins a paper table;
    run.json, config.yaml and every record name the plugin and its distribution version."""
    env, root = installed
    p = run_cli("methods", env={**env, "COLUMNS": "250"})
    assert p.returncode == 0, p.stderr
    line = next(ln for ln in p.stdout.splitlines() if ln.strip("│ ").startswith("vicreg"))
    assert "VICReg" in line and "cssl-bench-vicreg 0.1.0" in line

    out = root / "runs" / "vic-run"
    p = run_cli("pretrain", "vicreg", "--epochs", "1", *FAST_CLI, "--out", out, env=env)
    assert p.returncode == 0, p.stderr
    info = json.loads((out / "run.json").read_text())
    ref = info["plugin"]
    assert info["status"] == "complete" and info["method"] == "vicreg"
    assert (ref["kind"], ref["name"], ref["dist"], ref["version"]) == (
        "entry_point",
        "vicreg",
        "cssl-bench-vicreg",
        "0.1.0",
    )
    assert ref["recipe_file"] == str(RECIPE) and ref["recipe_sha256"] == hashlib.sha256(RECIPE.read_bytes()).hexdigest()
    assert "plugin:" in (out / "config.yaml").read_text()

    knn = run_cli("probe", "knn", out, "--k", "20", "--json", env=env)
    assert knn.returncode == 0, knn.stderr
    lin = run_cli("probe", "linear", out, "--json", env=env)
    assert lin.returncode == 0, lin.stderr
    recs = json.loads(knn.stdout) + json.loads(lin.stdout)
    assert {r["metric"] for r in recs} >= {"knn/top1", "linear/top1"}
    assert all(r["method"] == "vicreg" and r["plugin"] == ref and "plugin_loaded" not in r for r in recs)

    t = run_cli("table", "methods", "--add", "vicreg", "--scale", "tiny", "--format", "json", env=env)
    assert t.returncode == 0, t.stderr
    table = json.loads(t.stdout)
    row = table["rows"][-1]
    assert table["added_rows"] == [row["method"]] and row["method"] == "vicreg [added; seed 0]"
    top1 = next(r["value"] for r in recs if r["metric"] == "linear/top1")
    cell = row["100 ep"]  # our 1-epoch checkpoint stands for 100 paper epochs at tiny
    assert cell["ours"] == pytest.approx(top1, abs=0.01)
    assert cell["paper"] == "68.1"  # the paper's best self-supervised row at 100 epochs: SimSiam
    assert cell["delta"] == pytest.approx(top1 - 68.1, abs=0.01)
    assert row["800 ep"]["ours"] is None and row["800 ep"]["paper"] == "74.3"  # BYOL's
    md = run_cli("table", "methods", "--add", out, "--scale", "tiny", env=env)  # the run directory's row
    assert md.returncode == 0 and "| vicreg [added; seed 0] |" not in md.stdout
    assert f"| {out.name} [added; seed 0] |" in md.stdout and f"{top1:.1f}" in md.stdout

    # without the plugin installed the run cannot be rebuilt: one line naming what to install
    p = run_cli("probe", "knn", out, env={"PYTHONPATH": os.environ.get("PYTHONPATH", "")})
    one_line_error(p, 2, "entry point cssl_bench_vicreg:VICReg of cssl-bench-vicreg 0.1.0, which is not installed")


def test_method_file_plugin_reloads_and_notes_a_changed_file(tmp_path):
    """--method-file: provenance is the file's path and sha256; an edited file is used with a warning and noted in
    the records (plugin_loaded); a deleted one is a one-line error. Epoch 0: the initialised model suffices."""
    src = tmp_path / "my_vicreg.py"
    shutil.copy(MODULE, src)
    shutil.copy(RECIPE, tmp_path / "recipe.yaml")
    out = tmp_path / "run"
    env = {"CSSL_BENCH_RESULTS": str(tmp_path / "results")}
    p = run_cli("pretrain", "myvic", "--method-file", src, "--recipe", tmp_path / "recipe.yaml", "--epochs", "0",
                *FAST_CLI, "--out", out, env=env)  # fmt: skip
    assert p.returncode == 0, p.stderr
    ref = json.loads((out / "run.json").read_text())["plugin"]
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    assert (ref["kind"], ref["name"], ref["path"], ref["sha256"], ref["class"]) == (
        "file",
        "myvic",
        str(src),
        sha,
        "VICReg",
    )
    assert ref["recipe_option"] is True and ref["recipe_file"] == str(tmp_path / "recipe.yaml")

    src.write_text(src.read_text() + "\n# edited after the pretraining\n")
    p = run_cli("probe", "knn", out, "--k", "5", "--json", env=env)
    assert p.returncode == 0, p.stderr
    assert "warning: method file" in p.stderr and f"{sha[:12]} -> " in p.stderr
    rec = json.loads(p.stdout)[0]
    assert rec["method"] == "myvic" and rec["plugin"]["sha256"] == sha
    assert rec["plugin_loaded"]["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest() != sha

    src.unlink()
    one_line_error(run_cli("probe", "knn", out, env=env), 2, [str(src), "no longer exists"])


def test_reproduce_add_runs_only_the_added_row(in_process, tmp_path):
    """reproduce NAME --add METHOD plans the run a row of the table's own methods gets, with the plugin's recipe at
    the scale, and only the probes of its columns; then the table shows its row."""
    from cssl_bench.pipeline import reproduce as R
    from cssl_bench.results import tables

    p = R.plan(["methods"], "tiny", results=tmp_path / "res", runs_dir=tmp_path / "runs", add=["vicreg"])
    (run,) = p.runs
    assert run.keys == ["added[vicreg]"] and run.spec.method == "vicreg"
    assert (run.spec.epochs, run.spec.save_epochs) == (4, (1, 2, 3))  # as SimCLR's row: every epoch budget
    assert run.recipe.params["dim"] == 512 and run.recipe.plugin["name"] == "vicreg"  # the plugin's tiny section
    assert sorted((q.kind, q.epoch) for q in p.probes) == [("linear", e) for e in (1, 2, 3, 4)]
    assert "cssl-bench pretrain vicreg --scale tiny --epochs 4" in run.command("tiny")
    p = R.plan(["rotation"], "tiny", results=tmp_path / "res", runs_dir=tmp_path / "runs", add=["vicreg"], rows=[2])
    assert sorted(r.spec.method for r in p.runs) == ["moco-v2", "vicreg"]  # --rows as well as the added row
    vic = next(r for r in p.runs if r.spec.method == "vicreg")
    assert vic.spec.epochs == tables.LOOC_EPOCHS["tiny"] and {q.kind for q in p.probes if q.run is vic} == {
        "linear",
        "rotation",
    }
    with pytest.raises(UserError, match="exactly one --add"):
        R.plan(["methods"], "tiny", add=["vicreg", "simclr"], method_file=MODULE)
    with pytest.raises(UserError, match="not a run"):
        R.plan(["methods"], "tiny", add=[str(tmp_path)])


def test_reproduce_add_with_a_method_file_end_to_end(tmp_path):
    """reproduce methods --add NAME --method-file F: the added row's pretraining (checkpoints at every epoch budget)
    and linear probes run, and the table printed and rendered afterwards holds their values. Two seeds with
    ``--jobs 2``: each run in a spawned worker, which registers the plugin file again."""
    sets = ["data.embedded_train=256", "data.embedded_test=64", "data.workers=0", "model.backbone=resnet10-w0.125",
            "train.batch_size=32"]  # fmt: skip
    args = ["reproduce", "methods", "--add", "fv", "--method-file", MODULE, "--recipe", RECIPE, "--quiet"]
    args += ["--seeds", "2", "--jobs", "2"]
    args += ["--results", tmp_path / "res", "--runs", tmp_path / "runs"] + [x for s in sets for x in ("--set", s)]
    p = run_cli(*args)
    assert p.returncode == 0, p.stderr
    assert "| fv [added; seeds 0, 1] |" in p.stdout  # the table printed with its row
    assert "2 runs, 2 at a time" in p.stderr
    recs = [json.loads(ln) for ln in (tmp_path / "res" / "records.jsonl").read_text().splitlines()]
    assert {r["epochs"] for r in recs} == {1, 2, 3, 4} and all(r["plugin"]["kind"] == "file" for r in recs)
    assert sorted({r["seed"] for r in recs}) == [0, 1]
    t = json.loads(
        run_cli_here("table", "methods", "--results", tmp_path / "res", "--add", "fv", "--format", "json").stdout
    )
    row = t["rows"][-1]
    for col, e in (("100 ep", 1), ("800 ep", 4)):
        want = [r["value"] for r in recs if r["epochs"] == e and r["metric"] == "linear/top1"]
        assert len(want) == 2 and row[col]["ours"] == pytest.approx(sum(want) / 2, abs=0.01)


# --- rows of one's own, from records (no training) ------------------------------------------------------------
def _rec(method, epochs, value, seed, metric="linear/top1", **kw):
    return {"id": f"{method}{epochs}{seed}", "run_id": f"{method}-s{seed}", "method": method, "dataset": "embedded",
            "pretrain_dataset": "embedded", "scale": "tiny", "backbone": "r", "epochs": epochs, "batch": 64,
            "seed": seed, "feature": "backbone", "protocol": {"name": "simsiam"}, "metric": metric, "value": value,
            "config_hash": f"h{method}{seed}", "time": "2026-01-01T00:00:00", "data_options": {"embedded_version": 2},
            **kw}  # fmt: skip


def test_added_rows_in_the_paper_layout(tmp_path):
    from cssl_bench.results import tables

    recs = [
        _rec("vicreg", 1, 40.0, 0),
        _rec("vicreg", 1, 44.0, 1),
        _rec("vicreg", 4, 50.0, 0),
        _rec("simsiam", 1, 30.0, 0),
    ]
    spec = tables.resolve("methods")
    t = tables.build("methods", recs, "tiny", add=[tables.added_row(spec, "vicreg", recs)])
    assert len(t.ours) == len(spec.rows) + 1 and t.added == 1
    label, *_ = t.ours[-1]
    assert label == "vicreg [added; seeds 0, 1]" and t.paper[-1][0] == label
    col = t.headers.index("100 ep")
    v = t.ours[-1][col]
    assert v.mean == pytest.approx(42.0) and v.n == 2  # the mean over its seeds, as any cell
    assert t.paper[-1][col] == "68.1" and tables.fmt_delta(v, t.paper[-1][col]) == "-26.1"
    assert t.ours[-1][t.headers.index("800 ep")].mean == 50.0 and t.ours[-1][t.headers.index("200 ep")] is None
    assert t.ours[4][col].mean == 30.0  # the paper's rows are unchanged
    md = tables.render(t, "md", compare=True)
    assert (
        "| vicreg [added; seeds 0, 1] |  |  |  | 68.1 | 42.0 ± 2.8 | -26.1 |" in md
        and "[added] are not in the paper" in md
    )
    # LooC Table 1: the best self-supervised row is LooC's (the supervised row is left out of "best")
    rot = tables.build("rotation", recs, "tiny", add=[tables.added_row(tables.resolve("rotation"), "vicreg", recs)])
    paper_rows = tables.paper_csv("looc_table1")[1]
    j = rot.headers.index("Rotation/Acc.")
    assert rot.paper[-1][j] == max((r[j] for r in paper_rows[1:]), key=float) != paper_rows[0][j]
    # a run directory: its records by config hash; a run id of the store: that run's
    run = tmp_path / "my-run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"config_hash": "hvicreg1"}))
    by_dir = tables.build("methods", recs, "tiny", add=[tables.added_row(spec, str(run), recs)])
    assert by_dir.ours[-1][0] == "my-run [added; seed 1]" and by_dir.ours[-1][col].mean == 44.0
    by_id = tables.added_row(spec, "vicreg-s0", recs)
    assert dict(by_id.query)["run_id"] == "vicreg-s0"
    assert tables.added_row(spec, "vicreg", recs).run == "added[vicreg]"
    assert tables.added_row(tables.resolve("heads"), "vicreg", recs).run == "added-looc[vicreg]"


# --- errors in a plugin: one line naming the file, exit 2 -----------------------------------------------------
GOOD = (
    "from cssl_bench.methods import Method\n\nclass M(Method):\n    def loss(self, views, labels):\n        return {}\n"
)


NO_LOSS = "from cssl_bench.methods import Method\n\nclass M(Method):\n    pass\n"
NOT_A_METHOD = "import torch\n\nclass M(torch.nn.Module):\n    def loss(self, v, l):\n        return {}\n"


@pytest.mark.parametrize(
    "code,recipe,names,message",
    [
        ("import no_such_module_for_cssl\n", "{}", "file", "import failed: ModuleNotFoundError"),
        ("raise RuntimeError('plugin broke')\n", "{}", "file", "import failed: RuntimeError: plugin broke"),
        ("def f(:\n", "{}", "file", "import failed: SyntaxError"),
        (NO_LOSS, "{}", "file", "M defines no loss(views, labels)"),
        (NOT_A_METHOD, "{}", "file", "not a subclass of cssl_bench.methods.Method"),
        ("x = 1\n", "{}", "file", "defines no subclass of cssl_bench.methods.Method"),
        (GOOD, "optim: {bogus: 1}\n", "recipe", "unknown recipe key optim.bogus"),
        (GOOD, "scales: {paper: {train: {epochz: 3}}}\n", "recipe", "unknown recipe key train.epochz"),
        (GOOD, "scales: {huge: {}}\n", "recipe", "unknown scale 'huge' under scales"),
        (GOOD, "optim: {name: adam9}\n", "recipe", "optim.name must be one of"),
        (GOOD, "impl: simclr\n", "recipe", "impl is for built-in recipes"),
        (GOOD, "optim: [1\n", "recipe", "not valid YAML"),
    ],
)
def test_plugin_errors_are_one_line(tmp_path, monkeypatch, code, recipe, names, message):
    """Import failure, a class without loss or outside the contract, a bad recipe key or value (at any scale):
    one line naming the file at fault, exit 2, before any work."""
    from cssl_bench import config
    from cssl_bench.methods import plugins

    monkeypatch.setattr(config, "_PLUGIN_RECIPES", {})
    monkeypatch.setattr(plugins, "_LOADED", {})
    src, rec = tmp_path / "plug.py", tmp_path / "plug.yaml"
    src.write_text(code)
    rec.write_text(recipe)
    p = run_cli_here("pretrain", "mine", "--method-file", src, "--recipe", rec, "--out", tmp_path / "run")
    one_line_error(p, 2, message, str(src if names == "file" else rec))
    assert not (tmp_path / "run").exists()


def test_naming_and_entry_point_errors(in_process, tmp_path, monkeypatch):
    src = tmp_path / "plug.py"
    src.write_text(GOOD)
    one_line_error(
        run_cli_here("pretrain", "simclr", "--method-file", src, "--recipe", RECIPE), 2, "built-in method's name"
    )
    one_line_error(
        run_cli_here("pretrain", "simclr", "--recipe", RECIPE), 2, "--recipe gives a plugin method its recipe"
    )
    one_line_error(
        run_cli_here("pretrain", "no-such-method"), 2, "unknown method 'no-such-method'; choose from", "vicreg"
    )
    one_line_error(run_cli_here("pretrain", "mine", "--method-file", tmp_path / "nope.py"), 2, "nope.py does not exist")
    one_line_error(run_cli_here("pretrain", "mine", "--method-file", src), 2, [str(src), "no recipe; pass --recipe"])
    # an installed plugin whose import fails: one line naming it when used, a row saying so in the listing
    make_dist(tmp_path / "site2", "broken-plugin", "2.0", {"broken": "no_such_module_for_cssl:Thing"})
    monkeypatch.syspath_prepend(str(tmp_path / "site2"))
    one_line_error(run_cli_here("pretrain", "broken"), 2, ["broken-plugin 2.0", "import failed: ModuleNotFoundError"])
    p = run_cli_here("methods")
    assert p.returncode == 0 and "cannot be loaded" in p.stdout and "vicreg" in p.stdout


def test_changed_code_is_named():
    """What a reload or a resume reports: another file content, another distribution version; nothing otherwise."""
    from cssl_bench.methods.plugins import changed

    ep = {"kind": "entry_point", "name": "vicreg", "value": "m:C", "dist": "d", "version": "0.1.0"}
    assert changed(ep, dict(ep)) is None
    assert "d 0.1.0 when the run was pretrained, now m:C of d 0.2.0" in changed(ep, {**ep, "version": "0.2.0"})
    f = {"kind": "file", "name": "x", "path": "/a.py", "sha256": "a" * 64}
    assert changed(f, {**f, "path": "/b.py"}) is None  # the same code moved: same sha256
    assert "(sha256 aaaaaaaaaaaa -> bbbbbbbbbbbb)" in changed(f, {**f, "sha256": "b" * 64})
    assert "now method file" in changed(ep, f)


def test_methods_lists_a_package_init_file_under_its_folder_name():
    """`methods --method-file PKG/__init__.py` names the method after the package folder (a file's stem otherwise)."""
    p = run_cli("methods", "--method-file", MODULE, "--recipe", RECIPE)
    assert p.returncode == 0, p.stderr
    assert "cssl_bench_vicreg" in p.stdout and "__init__" not in p.stdout
