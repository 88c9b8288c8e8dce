"""``cssl-bench reproduce``: the plan (exact runs and probes, shared runs, skipping by config hash,
seeds, rows, run-directory reuse), refusals before anything runs, one fast real execution, and the
CI regression of a tiny-scale table against the committed records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cssl_bench import UserError
from cssl_bench.config import available_methods
from cssl_bench.pipeline import reproduce as R
from cssl_bench.results import tables as T
from cssl_bench.results.store import ResultsStore, make_record
from cssl_bench.train import distributed

REPO = Path(__file__).resolve().parents[1]
COMMITTED_TINY = REPO / "results" / "tiny" / "records.jsonl"
# The CI regression: row 5 of LooC Table 1 (LooC + Rotation: LooC's views, heads, queues and loss on top of
# MoCo's momentum encoder, then the rotation and IN-100 linear probes) at tiny scale, about 2 minutes on 2
# cores (the whole table takes about 8; CI's whole suite must stay under 15). Each cell of seed 0 must lie
# within the committed seeds' band: two sample stds of the committed seeds 0-2 around their mean, at least
# TOLERANCE percentage points (reproduce.regression_diff), which covers another CPU's arithmetic without
# letting a broken method or probe through.
REGRESSION_TABLE, REGRESSION_ROWS, TOLERANCE = "rotation", [5], 2.0
FAST = ["data.embedded_train=256", "data.embedded_test=200", "data.workers=0"]


def strip_status(lines):
    return [line.rsplit(" [", 1)[0] for line in lines]


def test_plan_rotation_tiny_exact(tmp_path):
    p = R.plan(["rotation"], "tiny", results=tmp_path / "res", runs_dir=tmp_path / "runs", baseline=True)
    expected = []
    for label, what in (
        ("supervised", "supervised 2 epochs, checkpoints at 0"),
        ("moco-v2", "moco-v2 2 epochs"),
        ("moco-rot", "moco-rot 2 epochs"),
        ("moco-rot-same", "moco-rot-same 2 epochs"),
        ("looc[rotation]", "looc 2 epochs, augment rotation"),
    ):
        expected += [
            f"pretrain {label} seed 0: {what}",
            f"  probe rotation {label} seed 0 epoch 2 on embedded [backbone]",
            f"  probe linear (looc protocol) {label} seed 0 epoch 2 on embedded [backbone]",
        ]
    # the random-init baselines: an epoch-0 run, each column's probe as initialised and with BN on the train images
    init, data = ", BN as initialised", ", BN re-estimated on embedded train"
    expected += [
        "pretrain random-init seed 0: supervised 0 epochs",
        f"  probe rotation random-init seed 0 epoch 0 on embedded [backbone]{init}",
        f"  probe rotation random-init seed 0 epoch 0 on embedded [backbone]{data}",
        f"  probe linear (looc protocol) random-init seed 0 epoch 0 on embedded [backbone]{init}",
        f"  probe linear (looc protocol) random-init seed 0 epoch 0 on embedded [backbone]{data}",
    ]
    assert strip_status(p.describe()) == expected
    have = set(available_methods())
    for r in p.runs:  # runnable where this version has the recipe; otherwise shown as unavailable
        assert r.status == ("run" if r.spec.method in have else "unavailable"), r.label
    assert all(q.tables == ["rotation"] for q in p.probes)
    assert [q.protocol for q in p.probes if q.kind == "linear"] == ["looc"] * 7
    assert [q.bn for q in p.probes if q.run is p.runs[-1]] == ["init", "data"] * 2
    assert all(q.bn is None for q in p.probes if q.run is not p.runs[-1])
    base = p.runs[-1]
    assert (base.spec.method, base.spec.epochs, base.spec.save_epochs) == ("supervised", 0, ())
    assert base.run_dir.name.startswith("init-supervised-tiny-") and base.run_dir.name.endswith("-s0")
    # no baseline (the library's default): exactly the rows' steps
    assert strip_status(R.plan(["rotation"], "tiny", results=tmp_path).describe()) == expected[:15]


def test_shared_runs_are_made_once(tmp_path):
    p = R.plan(["rotation", "finegrained", "robustness"], "tiny", results=tmp_path)
    moco = [r for r in p.runs if r.spec.method == "moco-v2"]
    assert len(moco) == 1
    lin = [q for q in p.probes if q.run is moco[0] and q.kind == "linear"]
    assert len(lin) == 1 and lin[0].tables == ["rotation", "finegrained", "robustness"]
    # iNat-1k and CUB-200 share the stand-in: one fine-grained probe per run and feature
    fg = [q for q in p.probes if q.run is moco[0] and q.kind == "finegrained"]
    assert [(q.dataset, q.feature) for q in fg] == [("embedded-fine", "backbone")]
    # LooC++ rows are the LooC run read through the concatenated heads: no extra pre-training
    cr = [r for r in p.runs if r.spec.augment == ("color", "rotation")]
    assert len(cr) == 1 and {q.feature for q in p.probes if q.run is cr[0]} == {"backbone", "concat"}

    p = R.plan(list(T.TABLES), "tiny", results=tmp_path)
    # 5 SimSiam-table methods, simsiam-optimal, supervised, 3 MoCo, 10 LooC: 6 augmentation sets of Tables 1-3 and 5,
    # and Table 5's rows 1-4 (colour, rotation and texture applied, with no / one variance head)
    assert len(p.runs) == 20
    sup = [r for r in p.runs if r.spec.method == "supervised"]
    assert len(sup) == 1 and set(sup[0].keys) == {"supervised", "supervised-in1k"}
    assert sup[0].spec.save_epochs == (0,)  # epoch 0 is the scratch row of SimSiam Table 5
    simclr = next(r for r in p.runs if r.spec.method == "simclr")
    assert (simclr.spec.epochs, simclr.spec.save_epochs) == (4, (1, 2, 3))  # one run serves every epoch column
    # ... and its 200-epoch checkpoint serves SimSiam Table 5: one embedded-det fine-tune per column group
    assert sorted((q.kind, q.epoch, q.protocol) for q in p.probes if q.run is simclr) == [
        ("detection", 2, "coco"),
        ("detection", 2, "voc07"),
        ("detection", 2, "voc0712"),
        ("linear", 1, "simsiam"),
        ("linear", 2, "simsiam"),
        ("linear", 3, "simsiam"),
        ("linear", 4, "simsiam"),
    ]
    # the catalogue does not depend on which tables asked: a later `reproduce all` reuses `reproduce rotation`
    alone = R.plan(["rotation"], "tiny", results=tmp_path)
    assert {r.run_dir for r in alone.runs} <= {r.run_dir for r in p.runs}


def test_small_plan_counts_and_budget():
    p = R.plan(
        list(T.TABLES), "small", results=Path("/nonexistent-results"), runs_dir=Path("/nonexistent-runs"), baseline=True
    )
    # probes: methods 5 runs x 4 budgets = 20; transfer 8 rows x 3 column groups (voc07, voc0712, coco) = 24;
    # rotation 5 x (rotation, linear) = 10; finegrained 13 (MoCo's and LooC-rotation's linear probes are
    # shared with rotation); robustness 15 (3 linear shared); heads 5 x (linear, fine-grained, few-shot,
    # corruption) = 20 on concat features. Random init (one epoch-0 run): 2 x (BN as initialised, on data) per
    # distinct column probe: linear simsiam (methods); rotation, linear looc (rotation); fine-grained, few-shot
    # (finegrained); objectnet, corruption (robustness); none new in heads, none in transfer (detection): 7 x 2
    assert len(p.runs) == 21 and len(p.probes) == 20 + 24 + 10 + 13 + 15 + 20 + 14
    assert sorted(r.spec.epochs for r in p.runs) == [0, 2] + [8] * 19
    base = [q for q in p.probes if q.bn]
    assert sorted((q.kind, q.dataset, q.protocol, q.bn) for q in base if q.bn == "data") == [
        ("corruption", "embedded", None, "data"),
        ("fewshot", "embedded-fine", None, "data"),
        ("finegrained", "embedded-fine", None, "data"),
        ("linear", "embedded", "looc", "data"),
        ("linear", "embedded", "simsiam", "data"),
        ("objectnet", "embedded-shift", None, "data"),
        ("rotation", "embedded", None, "data"),
    ]
    assert {q.epoch for q in base} == {0} and {q.feature for q in base} == {"backbone"}
    # one random-init run for the SimSiam and LooC tables alike (both pre-train on `embedded` at the CPU scales)
    init = [r for r in p.runs if r.spec.epochs == 0]
    assert (
        len(init) == 1 and init[0].keys == ["random-init-in1k", "random-init"] and init[0].spec.method == "supervised"
    )
    linear_looc = next(q for q in base if (q.kind, q.protocol, q.bn) == ("linear", "looc", "init"))
    assert linear_looc.tables == ["rotation", "finegrained", "robustness", "heads"]
    heads = [r for r in p.runs if r.spec.heads is not None]
    assert sorted(r.spec.heads for r in heads) == [(), ("color",), ("rotation",), ("texture",)]
    # the estimate is the measured cost model summed over the plan (the 3-hour budget is reported by
    # `reproduce all --scale small --dry-run`, not asserted: speed is measured, never a test limit)
    by_kind = {}
    for q in p.probes:
        by_kind[q.kind] = by_kind.get(q.kind, 0) + 1
    runs = sum(R.epoch_minutes(r.spec) * r.spec.epochs for r in p.runs)
    probes = sum(R.PROBE_MINUTES[k] * n for k, n in by_kind.items()) + R.CORRUPTION_RENDER_MINUTES_PER_IMAGE * 1000
    assert R.estimate_minutes(p) == pytest.approx(runs + probes)


def _protocol_of(step: R.ProbeStep) -> dict:
    """What the probe's records store: the full linear protocol (reproduce compares it), else its name."""
    if step.kind == "linear":
        return R.linear_protocol(step.protocol, step.run.recipe.scale).record()
    return {"name": step.protocol or step.kind}


def _records_for(step: R.ProbeStep, value: float = 50.0, **change) -> list[dict]:
    r = step.run.recipe
    metrics = {"linear": ["linear/top1", "linear/top5"], "rotation": ["rotation/acc"]}[step.kind]
    return [
        make_record(
            run_id=step.run.run_dir.name,
            method=r.method,
            dataset=step.dataset,
            pretrain_dataset=r.data.dataset,
            scale=r.scale,
            backbone=r.model.backbone,
            epochs=step.epoch,
            batch=r.train.batch_size,
            seed=r.train.seed,
            feature=step.feature,
            protocol=change.get("protocol", _protocol_of(step)),
            metric=m,
            value=value,
            config_hash=change.get("config_hash", r.hash()),
        )
        for m in metrics
    ]


def test_skipping_by_config_hash(tmp_path):
    store = ResultsStore(tmp_path)
    p = R.plan(["methods"], "tiny", results=tmp_path, rows=[2])
    assert [r.status for r in p.runs] == ["run"] and len(p.todo_probes) == 4
    first, second, *_ = p.probes
    # a record of another configuration (another seed: another hash) or another protocol does not count
    store.append(_records_for(first, config_hash="0123456789ab"))
    rec = _records_for(second)
    for x in rec:
        x["protocol"] = {"name": "moco"}
    store.append(rec)
    # ... nor one of the same protocol name with other settings (the simsiam protocol's LARS before its trust
    # coefficient was recorded trained as plain SGD)
    old_lars = {k: v for k, v in _protocol_of(first).items() if k != "trust_coefficient"}
    assert old_lars["optimizer"] == "lars"
    store.append(_records_for(first, protocol=old_lars))
    # ... nor a probe of the checkpoint with BN statistics re-estimated on data (probe linear --bn-data)
    store.append([dict(x, init_bn="data") for x in _records_for(first)])
    assert len(R.plan(["methods"], "tiny", results=tmp_path, rows=[2]).todo_probes) == 4
    store.append(_records_for(first) + _records_for(second))
    p2 = R.plan(["methods"], "tiny", results=tmp_path, rows=[2])
    assert [q.status for q in p2.probes] == ["done", "done", "run", "run"] and p2.runs[0].status == "run"
    store.append([x for q in p2.probes[2:] for x in _records_for(q)])
    p3 = R.plan(["methods"], "tiny", results=tmp_path, rows=[2])
    assert p3.todo_runs == [] and p3.todo_probes == [] and p3.runs[0].status == "skip"
    assert R.estimate_minutes(p3) == 0


def test_skipping_random_init_baselines(tmp_path):
    """A baseline probe is done by a record of its recipe at epoch 0 probed with the same BN statistics: as
    initialised (no ``init_bn``) or re-estimated on the run's pre-training dataset (``init_bn: data``)."""
    store = ResultsStore(tmp_path)
    p = R.plan(["methods"], "tiny", results=tmp_path, rows=[2], baseline=True)
    base = p.runs[1]
    assert base.keys == ["random-init-in1k"] and [r.status for r in p.runs] == ["run", "run"]
    init, data = (q for q in p.probes if q.run is base)
    assert (init.bn, data.bn, init.protocol, init.epoch, init.checkpoint_epoch) == ("init", "data", "simsiam", 0, None)
    assert init.command().endswith("--protocol simsiam") and data.command().endswith("--protocol simsiam --bn-data")
    on_data = {"init_bn": "data", "bn_estimate": {"dataset": "embedded", "split": "train", "images": 9984}}
    store.append([dict(x, **on_data) for x in _records_for(init)])  # BN on data: the other probe's, not this one's
    assert [q.status for q in R.plan(["methods"], "tiny", results=tmp_path, rows=[2], baseline=True).probes[4:]] == [
        "run",
        "done",
    ]
    # BN estimated on another dataset is another measurement
    store = ResultsStore(tmp_path / "b")
    store.append([dict(x, init_bn="data", bn_estimate={"dataset": "embedded-fine"}) for x in _records_for(data)])
    assert [
        q.status for q in R.plan(["methods"], "tiny", results=tmp_path / "b", rows=[2], baseline=True).probes[4:]
    ] == [
        "run",
        "run",
    ]
    store.append(_records_for(init))
    p = R.plan(["methods"], "tiny", results=tmp_path / "b", rows=[2], baseline=True)
    assert [q.status for q in p.probes[4:]] == ["done", "run"] and p.runs[1].status == "run"
    store.append([dict(x, **on_data) for x in _records_for(data)])
    p = R.plan(["methods"], "tiny", results=tmp_path / "b", rows=[2], baseline=True)
    assert [q.status for q in p.probes[4:]] == ["done", "done"] and p.runs[1].status == "skip"
    # the baseline of a table with only detection columns: none (its scratch row is the random init)
    assert [r.keys for r in R.plan(["transfer"], "tiny", results=tmp_path, rows=[1, 2], baseline=True).runs] == [
        ["supervised-in1k"]
    ]


def test_skipping_detection_by_column_group(tmp_path):
    """Scratch = the supervised run's epoch-0 checkpoint; the detection transfer records it as method 'scratch'."""
    p = R.plan(["transfer"], "tiny", rows=[1], results=tmp_path)
    assert [(q.kind, q.epoch, q.protocol, q.dataset) for q in p.probes] == [
        ("detection", 0, g, "embedded-det") for g in ("voc07", "voc0712", "coco")
    ]
    r = p.runs[0].recipe

    def rec(protocol):
        return make_record(
            run_id="x",
            method="scratch",
            dataset="embedded-det",
            pretrain_dataset="embedded",
            scale="tiny",
            backbone=r.model.backbone,
            epochs=0,
            batch=128,
            seed=0,
            feature="backbone",
            protocol=protocol,
            metric="voc07/ap",
            value=1.0,
            config_hash=r.hash(),
            extra={"data_options": {"embedded_version": 2}},
        )

    # scored with pycocotools (a record from before protocol.metric): not the VOC07 scoring the step would use
    ResultsStore(tmp_path).append([rec({"name": "detection"})])
    assert [q.status for q in R.plan(["transfer"], "tiny", rows=[1], results=tmp_path).probes] == ["run", "run", "run"]
    ResultsStore(tmp_path).append([rec({"name": "detection", "metric": "voc07"})])
    p = R.plan(["transfer"], "tiny", rows=[1], results=tmp_path)
    assert [q.status for q in p.probes] == ["done", "run", "run"]
    assert "--protocol voc0712" in p.probes[1].command() and "--epoch 0" in p.probes[1].command()
    t = T.build("transfer", ResultsStore(tmp_path).read(), "tiny")
    assert t.ours[0][t.headers.index("VOC 07 detection/AP")].mean == 1.0


def test_seeds_rows_and_overrides(tmp_path):
    p = R.plan(["rotation"], "tiny", seeds=2, rows=[2], results=tmp_path, baseline=True)
    # the row's run and the random-init run (whenever a row of the table is planned) under each seed; 2 probes
    # of the row's run, 4 of the random-init run (rotation, linear: each as initialised and BN on data)
    assert [(r.keys[0], r.seed) for r in p.runs] == [
        ("moco-v2", 0),
        ("moco-v2", 1),
        ("random-init", 0),
        ("random-init", 1),
    ]
    assert len(p.probes) == 2 * 2 + 2 * 4
    if p.runs[0].recipe is not None:
        a, b = (r.recipe for r in p.runs[:2])
        assert a.hash() != b.hash() and R.config_family(a) == R.config_family(b)
    p = R.plan(["rotation"], "tiny", rows=[2, 3], results=tmp_path, baseline=True)
    assert [r.keys for r in p.runs] == [["moco-v2"], ["moco-rot"], ["random-init"]]
    # --set overrides change the random-init run too (its hash: the data it estimates BN statistics on)
    assert "--set data.embedded_train=256" in R.plan(
        ["rotation"], "tiny", rows=[2], results=tmp_path, sets=FAST, baseline=True
    ).runs[1].command("tiny")
    p = R.plan(["methods"], "tiny", rows=[2], results=tmp_path, sets=FAST)
    r = p.runs[0]
    assert r.recipe.data.embedded_train == 256 and r.recipe.params["symmetric"] is True
    assert "--set data.embedded_train=256" in r.command("tiny") and "--set params.symmetric=true" in r.command("tiny")
    for bad in (
        dict(names=["rotation", "methods"], rows=[1]),
        dict(names=["rotation"], rows=[6]),
        dict(names=["rotation"], seeds=0),
        dict(names=["rotation"], scale="huge"),
        dict(names=["rotation"], sets=["optim.nope=1"]),
        dict(names=["rotation"], sets=["params.nope=1"]),
    ):  # overrides every run refuses: the user's error
        kw = {"scale": "tiny", **bad}
        with pytest.raises(UserError):
            R.plan(kw.pop("names"), kw.pop("scale"), results=tmp_path, **kw)
    with pytest.raises(UserError, match=r"--set optim.nope=1: .*nope") as e:
        R.plan(["rotation"], "tiny", results=tmp_path, sets=["optim.nope=1"])
    assert e.value.exit_code == 2


def test_run_directory_reuse_and_resume(tmp_path):
    p = R.plan(["methods"], "tiny", rows=[2], results=tmp_path / "res", runs_dir=tmp_path / "runs")
    r = p.runs[0]
    r.run_dir.mkdir(parents=True)
    (r.run_dir / "config.yaml").write_text(r.recipe.dump())
    (r.run_dir / "run.json").write_text(
        json.dumps({"status": "running", "config_hash": r.recipe.hash(), "epochs_done": 3})
    )
    p = R.plan(["methods"], "tiny", rows=[2], results=tmp_path / "res", runs_dir=tmp_path / "runs")
    assert (p.runs[0].status, p.runs[0].epochs_done) == ("resume", 3)
    # resuming costs the remaining 1 of 4 epochs (MoCo v2 symmetrised) plus the 4 linear probes
    assert R.estimate_minutes(p) == pytest.approx(R.SYMMETRIC_EPOCH_MINUTES * 1 + 4 * R.PROBE_MINUTES["linear"])
    (r.run_dir / "run.json").write_text(
        json.dumps({"status": "complete", "config_hash": r.recipe.hash(), "epochs_done": 4})
    )
    assert (
        R.plan(["methods"], "tiny", rows=[2], results=tmp_path / "res", runs_dir=tmp_path / "runs").runs[0].status
        == "reuse"
    )


def test_paper_scale_names_the_datasets_it_needs(tmp_path):
    p = R.plan(["rotation"], "paper", rows=[2], results=tmp_path)
    assert p.datasets() == {"imagenet100": ["linear", "pre-training", "rotation"]}
    assert R.plan(["methods"], "paper", rows=[1], results=tmp_path).datasets() == {
        "imagenet": ["linear", "pre-training"]
    }
    assert R.plan(["transfer"], "paper", rows=[2], results=tmp_path).datasets() == {
        "imagenet": ["pre-training"],
        "voc07": ["detection"],
        "voc0712": ["detection"],
        "coco": ["detection"],
    }
    assert R.dataset_status("embedded-det") is None
    if R.dataset_status("imagenet100") is not None:  # no ImageNet-100 on this machine: refused before starting
        with pytest.raises(UserError) as e:
            R.check_datasets(p)
        assert "imagenet100" in str(e.value) and "\n" not in str(e.value)


def test_missing_probe_is_refused_before_training(tmp_path, monkeypatch):
    monkeypatch.setitem(R.PROBE_FUNCTIONS, "linear", ("cssl_bench.eval.probes", "probe_that_does_not_exist"))
    p = R.plan(["methods"], "tiny", rows=[2], results=tmp_path / "res", runs_dir=tmp_path / "runs")
    with pytest.raises(UserError) as e:
        R.execute(p)
    assert "probe 'linear' is not available" in str(e.value) and "probe_that_does_not_exist" in str(e.value)
    assert not (tmp_path / "runs").exists()


def test_unbuildable_runs_are_shown_and_skipped(tmp_path, monkeypatch):
    """A configuration the method refuses is found by the plan, and `execute` skips it (its cells stay '–')."""

    def refuse_looc(recipe):
        if recipe.method == "looc":
            raise UserError("LooC refuses this configuration")

    monkeypatch.setattr(R, "_check_buildable", refuse_looc)
    p = R.plan(["heads"], "tiny", rows=[1], results=tmp_path / "res", runs_dir=tmp_path / "runs")
    assert [r.status for r in p.runs] == ["unavailable"] and {q.status for q in p.probes} == {"unavailable"}
    assert R.unavailable_runs(p) == [
        ("looc[color,rotation,texture;heads=] seed 0 (for heads)", "LooC refuses this configuration")
    ]
    R.execute(p, show_progress=False)
    assert not (tmp_path / "runs").exists() and ResultsStore(tmp_path / "res").read() == []


def test_execute_methods_row_end_to_end(tmp_path):
    """One real (tiny, 256-image) MoCo v2 run with checkpoints at the budgets, four linear probes, the table."""
    res, runs = tmp_path / "res", tmp_path / "runs"
    p = R.plan(["methods"], "tiny", rows=[2], results=res, runs_dir=runs, sets=FAST)
    R.execute(p, show_progress=False)
    records = ResultsStore(res).read()
    assert sorted({r["epochs"] for r in records}) == [1, 2, 3, 4]
    r0 = records[0]
    assert r0["config_family"] == R.config_family(p.runs[0].recipe) and r0["steps"][0].startswith(
        "cssl-bench pretrain moco-v2"
    )
    assert r0["steps"][1].startswith("cssl-bench probe linear") and "--protocol simsiam" in r0["steps"][1]
    t = T.build("methods", records, "tiny")
    assert all(isinstance(v, T.Value) for v in t.ours[1][4:]) and all(v is None for v in t.ours[0][4:])
    again = R.plan(["methods"], "tiny", rows=[2], results=res, runs_dir=runs, sets=FAST)
    assert again.todo_runs == [] and again.todo_probes == []
    written = R.write_outputs(["methods"], "tiny", res)
    assert {p.name for p in written} == {
        "methods.md",
        "methods.csv",
        "methods-compare.md",
        "findings.md",
        "methods.png",
    }


def test_execute_random_init_baselines_end_to_end(tmp_path):
    """The random-init run of LooC Table 1 (epoch 0, 256 images): rotation and linear probes, each as initialised
    and with BN statistics re-estimated on the training images; the table's caption states the higher."""
    res, runs = tmp_path / "res", tmp_path / "runs"
    p = R.plan(["rotation"], "tiny", rows=[2], results=res, runs_dir=runs, sets=FAST, baseline=True)
    base = p.runs[-1]
    p.runs, p.probes = [base], [q for q in p.probes if q.run is base]  # only the baseline's steps
    R.execute(p, show_progress=False)
    records = ResultsStore(res).read()
    got = sorted((r["metric"], r.get("init_bn", "-"), r["epochs"], r["feature"]) for r in records)
    assert got == [
        (m, bn, 0, "backbone") for m in ("linear/top1", "linear/top5", "rotation/acc") for bn in ("-", "data")
    ]
    assert all(r["method"] == "supervised" and r["config_hash"] == base.recipe.hash() for r in records)
    on_data = [r for r in records if r.get("init_bn") == "data"]
    assert {r["bn_estimate"]["dataset"] for r in on_data} == {"embedded"}
    assert {r["bn_estimate"]["images"] for r in on_data} == {256}  # FAST: all 256 training images, one batch
    assert next(r for r in on_data if r["metric"] == "linear/top1")["steps"][1].endswith("--bn-data")
    assert (
        "re-estimated on embedded's train split"
        in next(r for r in on_data if r["metric"] == "rotation/acc")["steps"][1]
    )
    again = R.plan(["rotation"], "tiny", rows=[2], results=res, runs_dir=runs, sets=FAST, baseline=True)
    assert [q.status for q in again.probes if q.run.spec.epochs == 0] == ["done"] * 4
    t = T.build("rotation", records, "tiny")
    assert set(t.baselines) == {"Rotation/Acc.", "IN-100/top-1", "IN-100/top-5"}
    for h, metric in (("Rotation/Acc.", "rotation/acc"), ("IN-100/top-1", "linear/top1")):
        values = {r.get("init_bn") or "init": r["value"] for r in records if r["metric"] == metric}
        key, v = t.baselines[h]
        assert v.mean == max(values.values()) and values[key] == v.mean
    assert "Random init (epoch 0; the higher of as initialised / BN statistics on data): Rotation/Acc." in t.caption


def test_regression_diff():
    def rec(method, metric, value, **kw):
        return {
            "method": method,
            "metric": metric,
            "value": value,
            "dataset": "embedded",
            "scale": "tiny",
            "epochs": 2,
            "feature": "backbone",
            "seed": 0,
            "protocol": {"name": "looc" if metric.startswith("linear") else "rotation"},
            "data_options": {"embedded_version": 2},
            **kw,
        }

    ref = [
        rec("moco-v2", "rotation/acc", 40.0),
        rec("moco-v2", "linear/top1", 30.0),
        rec("moco-v2", "linear/top5", 70.0),
    ]
    ours = [
        rec("moco-v2", "rotation/acc", 41.9),
        rec("moco-v2", "linear/top1", 27.5),
        rec("moco-v2", "linear/top5", 70.0),
    ]
    diff = R.regression_diff("rotation", ours, ref, "tiny", rows=[2], tolerance=2.0)
    assert diff == ["MoCo | IN-100/top-1: reproduced 27.5 vs committed 30.0 (band ±2.0)"]
    assert R.regression_diff("rotation", ref, ref, "tiny", rows=[2]) == []
    assert len(R.regression_diff("rotation", ours[:1], ref, "tiny", rows=[2])) == 2  # a missing cell fails
    # committed seeds 0-2 of the top-1 cell: 30, 26, 28 (mean 28, sample std 2): the band is 4 points around 28
    seeds = ref + [rec("moco-v2", "linear/top1", v, seed=s) for s, v in ((1, 26.0), (2, 28.0))]
    assert R.regression_diff("rotation", ours, seeds, "tiny", rows=[2]) == []  # 27.5: 0.5 from the mean
    far = [
        rec("moco-v2", "rotation/acc", 40.0),
        rec("moco-v2", "linear/top1", 23.5),
        rec("moco-v2", "linear/top5", 70.0),
    ]
    assert R.regression_diff("rotation", far, seeds, "tiny", rows=[2]) == [
        "MoCo | IN-100/top-1: reproduced 23.5 vs committed 28.0 ± 2.0 (band ±4.0)"
    ]


def test_cli_dry_run_and_errors(cli, tmp_path):
    r = cli("reproduce", "looc-t1", "--scale", "tiny", "--dry-run", "--results", tmp_path, env={"COLUMNS": "250"})
    assert r.returncode == 0, r.stderr
    assert "pretrain looc[rotation] seed 0" in r.stdout and "6 pre-trainings" in r.stdout and "estimated" in r.stdout
    assert "pretrain random-init seed 0" in r.stdout and "BN re-estimated on embedded train" in r.stdout
    r = cli("reproduce", "looc-t1", "--dry-run", "--no-baseline", "--results", tmp_path, env={"COLUMNS": "250"})
    assert r.returncode == 0 and "5 pre-trainings" in r.stdout and "random-init" not in r.stdout
    # --add alone runs only what the added row needs, unless --baseline asks for the baseline too
    args = ("reproduce", "looc-t1", "--add", "simclr", "--dry-run", "--results", tmp_path)
    r = cli(*args, env={"COLUMNS": "250"})
    assert r.returncode == 0 and "1 pre-trainings" in r.stdout and "random-init" not in r.stdout
    r = cli(*args, "--baseline", env={"COLUMNS": "250"})
    assert r.returncode == 0 and "2 pre-trainings" in r.stdout and "pretrain random-init seed 0" in r.stdout
    r = cli("reproduce", "table9", "--dry-run")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    r = cli("reproduce", "looc-t1", "--jobs", "0", "--results", tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == "error: --jobs must be at least 1, got 0", r.stderr


@pytest.mark.skipif(not COMMITTED_TINY.exists(), reason="no committed tiny records yet")
def test_ci_regression_tiny_table_against_committed_records(cli, tmp_path):
    """CI: reproduce rows of one table at tiny scale from nothing; each cell within TOLERANCE of results/tiny."""
    r = cli(
        "reproduce",
        REGRESSION_TABLE,
        "--scale",
        "tiny",
        "--rows",
        ",".join(map(str, REGRESSION_ROWS)),
        "--quiet",
        "--no-baseline",  # the baseline's 4 probes would add about a minute (PROBE_MINUTES: 2 x (0.25 + 0.15))
        "--results",
        tmp_path / "res",
        "--runs",
        tmp_path / "runs",
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    ours = ResultsStore(tmp_path / "res").read()
    committed = ResultsStore(COMMITTED_TINY.parent).read()
    diff = R.regression_diff(REGRESSION_TABLE, ours, committed, "tiny", REGRESSION_ROWS, TOLERANCE)
    assert diff == [], "\n".join(diff)


@pytest.mark.slow
def test_reproduce_rotation_tiny_from_empty_results(cli, tmp_path):
    """The issue's 'done when': `reproduce rotation --scale tiny` from an empty results directory fills the table."""
    r = cli(
        "reproduce",
        "rotation",
        "--scale",
        "tiny",
        "--quiet",
        "--results",
        tmp_path / "res",
        "--runs",
        tmp_path / "runs",
        timeout=1800,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    t = T.build("rotation", ResultsStore(tmp_path / "res").read(), "tiny")
    assert all(isinstance(v, T.Value) for row in t.ours for v in row[1:])
    assert "| MoCo + Rotation |" in r.stdout and (tmp_path / "res" / "tables" / "rotation.csv").exists()


def _numbers(records: list[dict]) -> list[tuple]:
    return sorted((r["config_hash"], r["epochs"], r["metric"], r.get("init_bn", "-"), r["value"]) for r in records)


def test_execute_jobs_gives_the_sequential_numbers(tmp_path, monkeypatch):
    """``--jobs 2``: two runs in two spawned processes store the records a sequential reproduce stores at the
    same thread count (one thread here, whatever the machine's cores), and leave nothing to do."""
    import torch

    rows = dict(rows=[1, 2], sets=FAST)
    seq = R.plan(["rotation"], "tiny", results=tmp_path / "a", runs_dir=tmp_path / "runs-a", **rows)
    assert len([r for r in seq.runs if r.status == "run"]) == 2
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        R.execute(seq, show_progress=False)
    finally:
        torch.set_num_threads(threads)
    monkeypatch.setattr(distributed, "threads_per_process", lambda processes: 1)
    par = R.plan(["rotation"], "tiny", results=tmp_path / "b", runs_dir=tmp_path / "runs-b", **rows)
    R.execute(par, show_progress=False, jobs=2)
    a, b = ResultsStore(tmp_path / "a").read(), ResultsStore(tmp_path / "b").read()
    assert len(a) == 6 and _numbers(a) == _numbers(b)
    assert {r["pretrain_threads"] for r in a + b} == {1}  # the workers ran with the threads they were given
    assert {r["command"] for r in b} == {r["command"] for r in a}
    assert all(r.status == "reuse" for r in par.runs) and all(q.status == "done" for q in par.probes)
    again = R.plan(["rotation"], "tiny", results=tmp_path / "b", runs_dir=tmp_path / "runs-b", **rows)
    assert again.todo_runs == [] and again.todo_probes == []


def test_execute_jobs_reports_a_failed_run_and_keeps_the_others(tmp_path, monkeypatch):
    """A run that fails in its worker does not stop the other; the error names it, the other's records are stored."""
    monkeypatch.setattr(distributed, "threads_per_process", lambda processes: 1)
    p = R.plan(["rotation"], "tiny", rows=[1, 2], results=tmp_path / "res", runs_dir=tmp_path / "runs", sets=FAST)
    bad = p.runs[0]
    (tmp_path / "runs").mkdir()
    bad.run_dir.write_text("a file where the run directory goes")
    with pytest.raises(UserError, match=rf"1 of 2 runs failed .*{bad.label}"):
        R.execute(p, show_progress=False, jobs=2)
    stored = ResultsStore(tmp_path / "res").read()
    assert stored and {r["config_hash"] for r in stored} == {p.runs[1].recipe.hash()}


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="parent-death signal: Linux only")
def test_jobs_worker_dies_with_its_parent(tmp_path):
    """A --jobs worker (``_die_with_parent``) is ended when the reproduce process that spawned it is killed."""
    import os
    import signal
    import subprocess
    import sys
    import time

    pid_file = tmp_path / "child.pid"
    child = (
        "import os, sys, time; from cssl_bench.pipeline.reproduce import _die_with_parent; _die_with_parent(); "
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    )
    parent = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {child!r}]); time.sleep(120)"
    p = subprocess.Popen([sys.executable, "-c", parent])
    try:
        for _ in range(600):
            if pid_file.exists() and pid_file.read_text():
                break
            time.sleep(0.1)
        pid = int(pid_file.read_text())
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":  # ended, not yet reaped
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
            pytest.fail("the worker outlived its parent")
    finally:
        p.kill()


def test_a_run_another_process_is_training_is_waited_for_not_trained_twice(tmp_path):
    """Two ``reproduce`` commands sharing a runs folder: the one that finds a run's directory locked by the
    other's trainer waits, then takes the finished run (no second pretraining) and runs its own probes."""
    import subprocess
    import sys
    import threading
    import time

    from rich.console import Console

    from cssl_bench.train.loop import pretrain

    p = R.plan(["rotation"], "tiny", rows=[1], results=tmp_path / "res", runs_dir=tmp_path / "runs", sets=FAST)
    r = p.runs[0]
    assert r.status == "run"
    pretrain(r.recipe, r.run_dir, show_progress=False)  # the other process's work, done after this plan was made
    log_before = (r.run_dir / "log.csv").read_text()
    code = "import sys, time\nfrom cssl_bench.train.checkpoint import run_lock\nwith run_lock(sys.argv[1]):\n"
    code += "    print('held', flush=True)\n    sys.stdin.readline()\n"  # holds until told to finish
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(r.run_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    console = Console(record=True, width=200)

    def release_once_waiting():  # the holder finishes only after execute has said it waits
        deadline = time.time() + 300
        while "waiting:" not in console.export_text(clear=False) and time.time() < deadline:
            time.sleep(0.1)
        holder.stdin.write(b"done\n")
        holder.stdin.flush()

    try:
        assert holder.stdout.readline().strip() == b"held"
        releaser = threading.Thread(target=release_once_waiting, daemon=True)
        releaser.start()
        R.execute(p, console=console, show_progress=False)
        releaser.join(timeout=10)
    finally:
        holder.kill()
        holder.wait()
    out = console.export_text()
    assert f"waiting: another process is training {r.run_dir}" in out and "finished by the other process" in out
    assert (r.run_dir / "log.csv").read_text() == log_before  # not trained again
    stored = ResultsStore(tmp_path / "res").read()
    assert stored and {x["config_hash"] for x in stored} == {r.recipe.hash()}
    assert r.status == "reuse" and all(q.status == "done" for q in p.probes)
