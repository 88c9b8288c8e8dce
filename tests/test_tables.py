"""The six paper tables on a hand-written fixture store: layouts against the papers' CSVs, golden
markdown / CSV renderings, seed averaging, ± cells, --compare deltas, provenance, plots and findings.

The fixture is written out literally below (method, metric, value per record), independent of the
table specs, with distractors the tables must ignore (another scale, another feature, an older re-run
of a seed, a non-preferred protocol). Regenerate the golden files after an intended change with
``CSSL_UPDATE_GOLDEN=1 pytest tests/test_tables.py`` and review the diff.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest

from cssl_bench import UserError
from cssl_bench.pipeline import reproduce as R
from cssl_bench.results import tables as T

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("CSSL_UPDATE_GOLDEN") == "1"
PAPER = Path(T.__file__).parent / "paper"


class Fixture:
    """Builds records like the probes write them (docs/records.md), with deterministic ids and times."""

    def __init__(self):
        self.records: list[dict] = []

    def add(
        self,
        method,
        metrics: dict,
        *,
        dataset="embedded",
        epochs=None,
        seed=0,
        feature="backbone",
        protocol="looc",
        augment=None,
        heads=None,
        scale="small",
        time="2025-01-01T00:00:00",
        ci95: dict | None = None,
        run=None,
        params: dict | None = None,
        data_options: dict | None = None,
    ):
        """``data_options``: as the probes write it; by default a new record's ({"embedded_version": 2}: the current
        generator), ``{}`` leaves the key out (a record from before generator version 2: version 1)."""
        epochs = L if epochs is None else epochs
        data_options = {"embedded_version": T.EMBEDDED_VERSION} if data_options is None else data_options
        for metric, value in metrics.items():
            n = len(self.records)
            rec = {
                "id": f"rec{n:03d}",
                "run_id": run or f"{method}-{scale}-s{seed}",
                "method": method,
                "dataset": dataset,
                "pretrain_dataset": "embedded",
                "scale": scale,
                "backbone": "resnet18-w0.25",
                "epochs": epochs,
                "batch": 128,
                "seed": seed,
                "feature": feature,
                "protocol": {"name": protocol},
                "metric": metric,
                "value": value,
                "config_hash": f"h-{method}-{seed}",
                "command": f"cssl-bench probe x {method}",
                "time": time,
            }
            if augment is not None:
                rec["augment"] = list(augment)
            if heads is not None:
                rec["variance_heads"] = list(heads)
            if params is not None:
                rec["params"] = dict(params)
            if ci95 and metric in ci95:
                rec["ci95"] = ci95[metric]
            if data_options:
                rec["data_options"] = dict(data_options)
            self.records.append(rec)
        return self


B = T.EPOCH_BUDGETS["small"]  # SimSiam's epoch columns at the small scale
L = T.LOOC_EPOCHS["small"]  # LooC's 500 epochs at the small scale


def lin(top1, top5=None):
    return {"linear/top1": top1, **({"linear/top5": top5} if top5 is not None else {})}


def fixture_records() -> list[dict]:
    f = Fixture()
    # --- SimSiam Table 4 (simsiam protocol; the small scale's budgets for 100, 200, 400, 800 epochs) ---
    for ep, v in ((B[100], 30.11), (B[200], 35.22), (B[400], 40.33), (B[800], 45.44)):
        f.add("simclr", lin(v), epochs=ep, protocol="simsiam")
    sym = {"symmetric": True}  # SimSiam's MoCo v2 rows: the symmetrised loss
    for ep, v in ((B[100], 31.5), (B[200], 36.5), (B[400], 41.5)):
        f.add("moco-v2", lin(v), epochs=ep, protocol="simsiam", run="moco-v2-sym", params=sym)
    f.add(
        "moco-v2", lin(11.1), epochs=B[400], protocol="moco", time="2025-06-01T00:00:00", params=sym
    )  # newer, not the preferred protocol
    f.add(
        "moco-v2", lin(39.9), epochs=B[800], protocol="moco", params=sym
    )  # the only one at 800: shown although not preferred
    # the LooC tables' MoCo v2 (not symmetrised), newer and with the preferred protocol: never a Table 4 cell
    f.add(
        "moco-v2", lin(99.0), epochs=B[800], protocol="simsiam", time="2025-07-01T00:00:00", params={"symmetric": False}
    )
    f.add("byol", lin(42.0), epochs=B[400], protocol="simsiam", seed=0)
    f.add("byol", lin(43.2), epochs=B[400], protocol="simsiam", seed=1)  # two seeds: mean 42.6
    for ep, v in ((B[100], 33.3), (B[200], 38.8), (B[400], 44.4)):
        f.add("simsiam", lin(v), epochs=ep, protocol="simsiam")
    f.add(
        "simsiam", lin(10.0), epochs=B[800], protocol="simsiam", time="2024-01-01T00:00:00"
    )  # older run of seed 0 ...
    f.add(
        "simsiam", lin(47.7), epochs=B[800], protocol="simsiam", time="2025-02-01T00:00:00"
    )  # ... replaced by this one
    # --- SimSiam Table 5 (embedded-det, the 200-epoch budget; scratch = epoch 0) ---
    det = [
        "voc07/ap50",
        "voc07/ap",
        "voc07/ap75",
        "voc0712/ap50",
        "voc0712/ap",
        "voc0712/ap75",
        "coco/ap50",
        "coco/ap",
        "coco/ap75",
        "coco/ap_mask50",
        "coco/ap_mask",
        "coco/ap_mask75",
    ]
    f.add(
        "supervised", {m: 10.0 + i for i, m in enumerate(det)}, dataset="embedded-det", epochs=0, protocol="detection"
    )
    f.add(
        "supervised",
        {m: 20.0 + i for i, m in enumerate(det)},
        dataset="embedded-det",
        epochs=B[200],
        protocol="detection",
    )
    f.add(
        "simclr",
        {m: 30.05 + i for i, m in enumerate(det[:6])},
        dataset="embedded-det",
        epochs=B[200],
        protocol="detection",
    )
    f.add("moco-v2", {"voc07/ap": 44.44}, dataset="embedded-det", epochs=B[200], protocol="detection", params=sym)
    f.add(
        "moco-v2",
        {"voc07/ap": 98.0},
        dataset="embedded-det",
        epochs=B[200],
        protocol="detection",  # not symmetrised:
        time="2025-07-01T00:00:00",
        params={"symmetric": False},
    )  # not Table 5's MoCo v2
    f.add(
        "simsiam-optimal",
        {"voc07/ap": 40.0, "coco/ap_mask75": 21.21},
        dataset="embedded-det",
        epochs=B[200],
        protocol="detection",
    )
    f.add(
        "simsiam", {"voc07/ap": 39.0}, dataset="embedded-det", epochs=B[800], protocol="detection"
    )  # wrong budget: not shown
    # --- LooC Table 1 (the small scale's LooC epochs; IN-100 = embedded, looc linear protocol) ---
    f.add("supervised", {"rotation/acc": 70.04}, protocol="rotation")
    f.add("supervised", lin(80.12, 95.55))
    f.add("moco-v2", {"rotation/acc": 60.0}, protocol="rotation", seed=0)
    f.add("moco-v2", {"rotation/acc": 62.6}, protocol="rotation", seed=1)
    f.add("moco-v2", lin(78.9, 94.1))
    # SimSiam's symmetrised MoCo v2 (another seed: without the filter the cell would average it in): not a LooC row
    f.add("moco-v2", lin(97.0, 99.0), seed=1, time="2024-06-01T00:00:00", params=sym)
    f.add("moco-v2", {"rotation/acc": 12.0}, protocol="rotation", scale="tiny", epochs=2)  # another scale
    f.add("moco-rot", {"rotation/acc": 43.21}, protocol="rotation")
    f.add("moco-rot", lin(77.0))
    f.add("moco-rot-same", {"rotation/acc": 45.45}, protocol="rotation")
    f.add("looc", {"rotation/acc": 65.0}, protocol="rotation", augment=["rotation"])
    f.add("looc", lin(79.9, 95.0), augment=["rotation"])
    f.add(
        "looc", {"rotation/acc": 99.0}, protocol="rotation", augment=["rotation"], feature="head:0"
    )  # another feature
    # --- LooC Table 2 (iNat-1k, CUB-200, Flowers-102 -> embedded-fine) ---
    fs = {"fewshot/5shot": 0.44, "fewshot/10shot": 0.12}
    f.add(
        "moco-v2", {"finegrained/top1": 36.0, "finegrained/top5": 60.0}, dataset="embedded-fine", protocol="finegrained"
    )
    f.add(
        "moco-v2", {"fewshot/5shot": 67.0, "fewshot/10shot": 77.0}, dataset="embedded-fine", protocol="fewshot", ci95=fs
    )
    f.add(
        "looc",
        {"finegrained/top1": 41.0, "finegrained/top5": 66.0},
        dataset="embedded-fine",
        protocol="finegrained",
        augment=["color"],
    )
    f.add("looc", lin(81.1, 95.3), augment=["color"])
    f.add("looc", {"finegrained/top1": 40.0}, dataset="embedded-fine", protocol="finegrained", augment=["rotation"])
    f.add(
        "looc",
        {"fewshot/5shot": 70.1, "fewshot/10shot": 79.3},
        dataset="embedded-fine",
        protocol="fewshot",
        augment=["rotation"],
        ci95={"fewshot/5shot": 0.36},
    )
    f.add(
        "looc",
        {"finegrained/top1": 44.0, "finegrained/top5": 69.3},
        dataset="embedded-fine",
        protocol="finegrained",
        augment=["rotation", "color"],
    )  # order of the list does not matter
    f.add(
        "looc",
        {"finegrained/top1": 46.1},
        dataset="embedded-fine",
        protocol="finegrained",
        augment=["color", "rotation"],
        feature="concat",
    )
    f.add(
        "looc",
        {"fewshot/5shot": 68.0},
        dataset="embedded-fine",
        protocol="fewshot",
        augment=["color", "rotation"],
        feature="concat",
        seed=0,
        ci95={"fewshot/5shot": 0.5},
    )
    f.add(
        "looc",
        {"fewshot/5shot": 69.0},
        dataset="embedded-fine",
        protocol="fewshot",
        augment=["color", "rotation"],
        feature="concat",
        seed=1,
        ci95={"fewshot/5shot": 0.5},
    )  # two seeds: 68.5, ± from the seeds
    # --- LooC Table 3 (ON-13 -> embedded-shift, IN-C-100 -> embedded) ---
    groups = [
        "corruption/noise",
        "corruption/blur",
        "corruption/weather",
        "corruption/digital",
        "corruption/all",
        "corruption/d>3",
    ]
    f.add(
        "supervised", {"objectnet/top1": 30.9, "objectnet/top5": 54.8}, dataset="embedded-shift", protocol="objectnet"
    )
    f.add("supervised", {g: 28.0 + 3 * i for i, g in enumerate(groups)}, protocol="corruption")
    f.add("moco-v2", {g: 37.0 + 2 * i for i, g in enumerate(groups)}, protocol="corruption")
    f.add("looc", {"objectnet/top1": 34.2}, dataset="embedded-shift", protocol="objectnet", augment=["rotation"])
    f.add("looc", {"corruption/all": 51.3}, protocol="corruption", augment=["texture"])
    f.add("looc", lin(80.2), augment=["rotation", "texture"])
    f.add(
        "looc++",
        {"objectnet/top1": 32.6, "corruption/all": 48.8},
        dataset="embedded",
        protocol="x",
        augment=["rotation", "texture"],
        feature="concat",
    )  # objectnet on the wrong dataset: not shown; corruption/all shown
    # corruption details for the plot
    for k in range(1, 6):
        f.add(
            "moco-v2",
            {f"corruption/gaussian_noise/s{k}": 60.0 - 5 * k, f"corruption/fog/s{k}": 50.0 - 2 * k},
            protocol="corruption",
        )
        f.add("supervised", {f"corruption/gaussian_noise/s{k}": 40.0 - 5 * k}, protocol="corruption")
    # --- LooC Table 5 (LooC++ = concat features, rows by variance heads) ---
    # (every row applies all three augmentations; records of runs before the option carry no variance_heads)
    all3 = ["color", "rotation", "texture"]
    f.add("looc", lin(78.5, 94.3), augment=all3, heads=[], feature="concat")
    f.add("looc", {"corruption/all": 48.0}, augment=all3, heads=[], feature="concat", protocol="corruption")
    f.add("looc", lin(79.7), augment=all3, heads=["color"], feature="concat")
    f.add("looc", lin(81.5), augment=all3, heads=["rotation"], feature="concat")
    f.add("looc", lin(70.0), augment=["rotation"], feature="concat")  # one augmentation, its head: not a Table 5 row
    f.add(
        "looc",
        {"fewshot/10shot": 80.5},
        dataset="embedded-fine",
        protocol="fewshot",
        augment=all3,
        heads=["texture"],
        feature="concat",
        ci95={"fewshot/10shot": 0.2},
    )
    f.add("looc", lin(82.2, 95.3), augment=["color", "rotation", "texture"], feature="concat")
    f.add(
        "looc", lin(82.9), augment=["color", "rotation", "texture"], feature="concat:out", time="2024-06-01T00:00:00"
    )  # another concat layer, older: not shown
    return f.records


RECORDS = fixture_records()
NAMES = ["methods", "transfer", "rotation", "finegrained", "robustness", "heads"]


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"missing golden file {path}; run with CSSL_UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(), f"{name} differs from its golden file"


@pytest.mark.parametrize("name", NAMES)
def test_golden_markdown_and_csv(name):
    t = T.build(name, RECORDS, "small")
    check_golden(f"{name}.md", T.render(t, "md"))
    check_golden(f"{name}.csv", T.render(t, "csv"))


def test_golden_compare_and_provenance():
    t = T.build("rotation", RECORDS, "small")
    check_golden("rotation-compare.md", T.render(t, "md", compare=True))
    check_golden("rotation-compare.csv", T.render(t, "csv", compare=True))
    check_golden("finegrained-provenance.md", T.render(T.build("finegrained", RECORDS, "small"), "md", provenance=True))


@pytest.mark.parametrize("name", NAMES)
def test_layout_matches_paper_csv(name):
    """Our CSV has the paper CSV's header, rows, labels and fixed (check-mark) cells, in order."""
    spec = T.resolve(name)
    paper = list(csv.reader((PAPER / f"{spec.csv}.csv").read_text().splitlines()))
    for records in ([], RECORDS):
        ours = list(csv.reader(io.StringIO(T.render(T.build(name, records, "small"), "csv"))))
        assert ours[0] == paper[0]
        assert len(ours) == len(paper)
        for prow, orow in zip(paper[1:], ours[1:]):
            assert len(orow) == len(prow)
            for h, p, o in zip(paper[0], prow, orow):
                if spec.column_cell(h) is None:
                    assert o == p, (name, h)
                else:
                    assert o == T.MISSING or T.parse_paper(o) is not None
    md = T.render(T.build(name, [], "small"), "md").splitlines()
    grouped = any("/" in h for h in paper[0])
    # two header rows where the CSV has group/sub headers: group names, separator, bold sub-columns
    assert md[1].startswith("|:---")
    if grouped:
        subs = [h.split("/", 1)[1] for h in paper[0] if "/" in h]
        assert [c.strip().strip("*") for c in md[2].strip("|").split("|") if c.strip()] == subs
    assert sum(1 for line in md if line.startswith("| ")) == len(paper) + (1 if grouped else 0)


ABBREV = {"Color": "color", "Col.": "color", "Rotation": "rotation", "Rot.": "rotation", "Tex.": "texture"}


@pytest.mark.parametrize("name", ["finegrained", "robustness", "heads"])
def test_looc_rows_agree_with_their_check_marks(name):
    """A LooC row's augmentation list is exactly the set of its 'yes' columns (Aug. / Variance head)."""
    spec = T.resolve(name)
    headers, rows = T.paper_csv(spec.csv)
    for prow, row in zip(rows, spec.rows):
        q = row.q
        if "augment" not in q:
            continue
        yes = {ABBREV[h.split("/")[1]] for h, v in zip(headers, prow) if v == "yes"}
        if name == "heads":  # all three augmentations applied; the check marks are the variance heads
            assert set(q["augment"]) == {"color", "rotation", "texture"} and set(q["variance_heads"]) == yes, prow
            spec_ = R.run_spec(row.run, "small")
            assert (
                spec_.augment == ("color", "rotation", "texture")
                and set(spec_.heads if spec_.heads is not None else spec_.augment) == yes
            )
        else:
            assert set(q["augment"]) == set(q["variance_heads"]) == yes, (name, prow)
            assert row.run == f"looc[{','.join(q['augment'])}]"
        assert (row.feature == "concat") == (prow[0] == "LooC++")


def cell(name, row, header, records=RECORDS, scale="small"):
    t = T.build(name, records, scale)
    return t, t.ours[row][t.headers.index(header)]


def test_seed_mean_and_plus_minus():
    _, v = cell("rotation", 1, "Rotation/Acc.")
    assert v.n == 2 and v.mean == pytest.approx(61.3) and v.std == pytest.approx(1.8385, abs=1e-4)
    # one seed of few-shot: the record's own 95% half-width
    t, v = cell("finegrained", 0, "Flowers-102/5-shot")
    assert T.fmt_value(v, t.paper[0][t.headers.index("Flowers-102/5-shot")]) == "67.0 (±0.4)"
    # two seeds: Student t with 1 dof: 12.706 * sd / sqrt(2) = 12.706 * 0.7071 / 1.4142 = 6.353
    t, v = cell("finegrained", 4, "Flowers-102/5-shot")
    assert v.mean == pytest.approx(68.5) and v.pm == pytest.approx(6.353, abs=1e-3)
    assert T.fmt_value(v, "68.1 (±0.4)") == "68.5 (±6.4)"
    # no (±x) where the paper prints none: several seeds show mean ± sample std (42.0, 43.2: sd 0.849)
    assert T.fmt_value(cell("methods", 2, "400 ep")[1], "73.2") == "42.6 ± 0.8"
    assert T.fmt_value(cell("methods", 0, "400 ep")[1], "69.8") == "40.3"  # one seed: the mean alone


def test_three_seeds_half_width():
    recs = Fixture()
    for s, v in enumerate((70.0, 71.0, 72.0)):
        recs.add("moco-v2", {"fewshot/5shot": v}, dataset="embedded-fine", protocol="fewshot", seed=s)
    t, v = cell("finegrained", 0, "Flowers-102/5-shot", recs.records)
    assert (v.mean, v.n) == (71.0, 3)
    assert v.pm == pytest.approx(4.303 / 3**0.5)  # sd 1
    assert T.fmt_value(v, "67.9 (±0.5)") == "71.0 (±2.5)"


def test_selection_rules():
    # newer re-run of the same seed replaces the older one
    assert cell("methods", 4, "800 ep")[1].mean == 47.7
    # preferred protocol wins over a newer record of another protocol ...
    assert cell("methods", 1, "400 ep")[1].mean == 41.5
    # ... which is still shown where it is the only one
    v = cell("methods", 1, "800 ep")[1]
    assert v.mean == 39.9 and v.records[0]["protocol"]["name"] == "moco"
    # other feature, scale, dataset or epochs are never picked
    assert cell("rotation", 4, "Rotation/Acc.")[1].mean == 65.0
    assert cell("rotation", 1, "Rotation/Acc.", scale="tiny")[1].mean == 12.0
    assert cell("robustness", 5, "ON-13/top-1")[1] is None
    assert cell("transfer", 6, "VOC 07 detection/AP")[1] is None
    # scratch: any run's epoch-0 checkpoint
    assert cell("transfer", 0, "VOC 07 detection/AP")[1].mean == 11.0
    # LooC++ reads records of `looc` runs probed with concat, or of the `looc++` recipe
    assert cell("finegrained", 4, "iNat-1k/top-1")[1].mean == 46.1
    assert cell("robustness", 5, "IN-C-100 (top-1)/All")[1].mean == 48.8
    # two concat layers of one run are two configurations: the newest is shown, the count is kept
    v = cell("heads", 4, "IN-100/top-1")[1]
    assert v.mean == 82.2 and v.families == 2
    # iNat-1k and CUB-200 share the embedded-fine stand-in at the CPU scales
    assert cell("finegrained", 3, "CUB-200/top-1")[1].mean == cell("finegrained", 3, "iNat-1k/top-1")[1].mean == 44.0


def test_records_of_a_generator_variant_never_fill_a_cell(tmp_path):
    """A probe record says which data it measured (data_options: the generator version of an embedded pretraining
    dataset always, the other options only when not the defaults); a table cell ignores records of an
    embedded-generator variant but keeps those of another dataset size."""
    from cssl_bench.config import load_recipe
    from cssl_bench.eval.probes import data_options_record

    assert data_options_record(load_recipe("moco-v2", "tiny")) == {"data_options": {"embedded_version": 2}}
    variant = load_recipe(
        "moco-v2",
        "tiny",
        {},
        ["data.embedded_version=1", "data.embedded_background_jitter=0", "data.embedded_train=512"],
    )
    assert data_options_record(variant) == {
        "data_options": {"embedded_train": 512, "embedded_background_jitter": 0.0, "embedded_version": 1}
    }
    base = cell("rotation", 1, "Rotation/Acc.")[1]
    recs = [dict(r, data_options={"embedded_background_jitter": 0.0}) if r in base.records else r for r in RECORDS]
    other = cell("rotation", 1, "Rotation/Acc.", recs)[1]
    assert other is None
    sized = [
        dict(r, data_options={"embedded_train": 512, "embedded_version": 2}) if r in base.records else r
        for r in RECORDS
    ]
    assert cell("rotation", 1, "Rotation/Acc.", sized)[1].mean == base.mean


def test_records_of_another_generator_version_never_fill_a_cell():
    """A record pretrained on an embedded dataset fills a cell only when measured on the current generator
    version (data_options.embedded_version == T.EMBEDDED_VERSION); one without the key predates version 2 and
    counts as version 1. Paper-scale records (ImageNet ...) need no version."""
    from cssl_bench.config import DataCfg

    assert T.EMBEDDED_VERSION == DataCfg.embedded_version == 2
    rot = "Rotation/Acc."

    def one(**kw):
        return Fixture().add("moco-rot", {"rotation/acc": 43.21}, protocol="rotation", **kw).records

    assert cell("rotation", 2, rot, one())[1].mean == 43.21  # version 2 (the fixture's default): fills its cell
    assert cell("rotation", 2, rot, one(data_options={"embedded_version": 2}))[1].mean == 43.21
    assert cell("rotation", 2, rot, one(data_options={}))[1] is None  # no version: an old record, version 1
    assert cell("rotation", 2, rot, one(data_options={"embedded_version": 1}))[1] is None
    assert cell("rotation", 2, rot, one(data_options={"embedded_train": 512}))[1] is None  # options but no version: v1
    assert not T.is_variant(one()[0]) and T.is_variant(one(data_options={})[0])
    # a version-1 record next to a version-2 one of the same configuration: only the version-2 value is shown
    old = one(data_options={}, time="2026-01-01T00:00:00")[0]
    both = [dict(old, value=1.0, id="old")] + one()
    v = cell("rotation", 2, rot, both)[1]
    assert v.mean == 43.21 and v.n == 1 and v.families == 1
    # paper scale: pretrained on ImageNet, no data_options at all, still fills its cell
    paper = (
        Fixture()
        .add(
            "moco-rot",
            {"rotation/acc": 55.5},
            protocol="rotation",
            scale="paper",
            dataset="imagenet100",
            epochs=T.LOOC_EPOCHS["paper"],
            data_options={},
        )
        .records
    )
    for r in paper:
        r["pretrain_dataset"] = "imagenet100"
    assert "data_options" not in paper[0] and not T.is_variant(paper[0])
    assert cell("rotation", 2, rot, paper, scale="paper")[1].mean == 55.5
    # an embedded record probed at paper scale (no imagenet): the version rule applies by pretrain_dataset
    assert T.is_variant({"pretrain_dataset": "embedded", "dataset": "embedded-fine", "scale": "paper"})
    assert not T.is_variant({"dataset": "imagenet", "pretrain_dataset": "imagenet"})
    assert T.is_variant({"dataset": "embedded-det"})  # no pretrain_dataset: its dataset says embedded


def test_compare_deltas():
    t = T.build("rotation", RECORDS, "small")
    headers, rows = T.flat_rows(t, compare=True)
    assert headers[:4] == ["model", "Rotation/Acc. [paper]", "Rotation/Acc. [ours]", "Rotation/Acc. [delta]"]
    # MoCo: ours 61.3 ± 1.8 (seeds 60.0, 62.6: sample sd 1.84), paper 61.1 -> +0.2; MoCo + Rotation: 43.2 vs 43.3 -> -0.1
    assert rows[1][1:4] == ["61.1", "61.3 ± 1.8", "+0.2"]
    assert rows[2][1:4] == ["43.3", "43.2", "-0.1"]
    # no record: ours and delta are '–', the paper number stays
    assert rows[3][4:7] == ["78.1", T.MISSING, T.MISSING]
    js = json.loads(T.render(t, "json"))
    assert js["rows"][1]["Rotation/Acc."]["delta"] == pytest.approx(0.2)
    assert js["rows"][1]["Rotation/Acc."]["paper"] == "61.1" and js["rows"][1]["model"] == "MoCo"


def test_json_provenance_lists_records_and_commands():
    js = json.loads(T.render(T.build("rotation", RECORDS, "small"), "json", provenance=True))
    c = js["rows"][1]["Rotation/Acc."]
    want = [
        r["id"] for r in RECORDS if r["method"] == "moco-v2" and r["metric"] == "rotation/acc" and r["scale"] == "small"
    ]
    assert len(want) == 2 and sorted(c["records"]) == sorted(want)
    assert c["commands"] == ["cssl-bench probe x moco-v2"]
    assert c["n"] == 2 and js["scale"] == "small"


def test_provenance_names_runs_whose_embedding_had_collapsed():
    """Records carry the probed checkpoint's collapse monitor (pretrain_z_std); provenance names the runs under
    the warning threshold, in markdown and JSON, and says nothing for records without it."""
    import copy

    from cssl_bench.collapse import COLLAPSED_BELOW

    recs = copy.deepcopy(RECORDS)
    moco = [r for r in recs if r["method"] == "moco-v2" and r["metric"] == "rotation/acc" and r["scale"] == "small"]
    moco[0]["pretrain_z_std"] = {"step": 156, "value": 0.0006, "x_sqrt_dim": 0.0066}
    moco[1]["pretrain_z_std"] = {
        "step": 156,
        "value": 0.05,
        "x_sqrt_dim": COLLAPSED_BELOW,
    }  # at the threshold: not collapsed
    t = T.build("rotation", recs, "small")
    js = json.loads(T.render(t, "json", provenance=True))
    assert js["rows"][1]["Rotation/Acc."]["collapsed_runs"] == [moco[0]["run_id"]]
    md = T.render(t, "md", provenance=True)
    flagged = [line for line in md.splitlines() if "collapsed embedding" in line]
    assert len(flagged) == 1 and moco[0]["run_id"] in flagged[0] and "Rotation/Acc." in flagged[0]
    assert "collapsed" not in T.render(T.build("rotation", RECORDS, "small"), "md", provenance=True)


def test_caption_states_scale_stand_ins_backbone_epochs_seeds():
    t = T.build("robustness", RECORDS, "small")
    assert "Scale: small" in t.caption
    assert "ON-13 -> embedded-shift" in t.caption and "IN-C-100 -> embedded corrupted on the fly" in t.caption
    assert "backbone resnet18-w0.25" in t.caption and f"Pre-training: {L} epochs (paper: 500)" in t.caption
    assert "seeds 0" in t.caption
    t = T.build("methods", [], "paper")
    assert "Scale: paper" in t.caption and "No results yet" in t.caption and "100 -> 100" in t.caption
    assert "VOC scored" not in T.build("robustness", RECORDS, "small").caption


def test_caption_says_how_the_voc_cells_were_scored():
    """Detection records without protocol.metric were scored by pycocotools; the caption names what the cells used."""
    t = T.build("transfer", RECORDS, "small")
    assert "VOC scored with pycocotools (101 recall points)." in t.caption
    rescored = [
        {**r, "protocol": {**r["protocol"], "metric": "voc07"}, "time": "2026-01-01T00:00:00"}
        for r in RECORDS
        if r["metric"].startswith(("voc07/", "voc0712/"))
    ]
    t = T.build("transfer", RECORDS + rescored, "small")
    assert "VOC scored as detectron2's VOC2007 evaluator (11-point AP)." in t.caption and "pycocotools" not in t.caption


def test_resolve_aliases_and_unknown():
    for name, alias in zip(NAMES, ["simsiam-t4", "simsiam-t5", "looc-t1", "looc-t2", "looc-t3", "looc-t5"]):
        assert T.resolve(alias).name == name
    with pytest.raises(UserError) as e:
        T.resolve("table9")
    assert e.value.exit_code == 2


def test_findings_hold_on_the_paper_numbers_and_are_checked_on_ours():
    for name in NAMES:
        t = T.build(name, RECORDS, "small")
        for f in T.FINDINGS:
            if f.table == name:
                c = T.check_finding(f, t)
                assert c["paper"] is True, f.text  # each finding is a claim the paper's own numbers support
    t = T.build("rotation", RECORDS, "small")
    by = {f.text: T.check_finding(f, t) for f in T.FINDINGS if f.table == "rotation"}
    assert by["Adding rotation to MoCo's augmentations lowers rotation accuracy"]["ours"] is True  # 61.3 > 43.2
    assert by["LooC + Rotation keeps more IN-100 accuracy than MoCo + Rotation"]["ours"] is True  # 79.9 > 77.0
    # a reversed store disagrees
    flipped = [dict(r, value=100 - r["value"]) for r in RECORDS]
    t2 = T.build("rotation", flipped, "small")
    assert T.check_finding(T.FINDINGS[0], t2)["ours"] is False and T.check_finding(T.FINDINGS[0], t2)["margin"] == -18.1
    md = T.findings_markdown(RECORDS, "small", ["rotation"])
    # 61.3 - 43.2; MoCo has two seeds, MoCo + Rotation one: its std is unknown, so the verdict is inconclusive
    assert (
        "| rotation | Adding rotation to MoCo's augmentations lowers rotation accuracy | inconclusive | +18.1 | n/a "
        "| 2 vs 1 | MoCo Rotation/Acc.: 61.3 ± 1.8 (paper 61.1); MoCo + Rotation Rotation/Acc.: 43.2 (paper 43.3) |"
        in md
    )
    # 61.3 - 45.5 (45.45 shown to one decimal)
    assert "Sharing the rotation between q and k does not restore it | inconclusive | +15.8 | n/a | 2 vs 1 |" in md
    assert md.endswith(T.FINDINGS_LEGEND + "\n")


# --- verdicts with confidence: hand-computed on LooC Table 1's rotation column ------------------------------
ROT = "Rotation/Acc."
ADD_ROT, LOOC_ROT = T.FINDINGS[0], T.FINDINGS[2]  # MoCo > MoCo + Rotation; LooC + Rotation > both


def _rotation_store(moco=(), moco_rot=(), looc=()) -> list[dict]:
    """Rotation accuracies per seed of LooC Table 1's MoCo, MoCo + Rotation and LooC + Rotation rows."""
    f = Fixture()
    for method, values, kw in (
        ("moco-v2", moco, {}),
        ("moco-rot", moco_rot, {}),
        ("looc", looc, {"augment": ["rotation"]}),
    ):
        for seed, v in enumerate(values):
            f.add(method, {"rotation/acc": v}, protocol="rotation", seed=seed, **kw)
    return f.records


def _check(finding, **cells) -> dict:
    return T.check_finding(finding, T.build("rotation", _rotation_store(**cells), "small"))


def test_pooled_std_and_one_comparison():
    a = T.seed_value(_rotation_store(moco=(60.0, 62.0, 64.0)))  # mean 62, std 2
    b = T.seed_value(_rotation_store(moco=(50.0, 51.0, 52.0)))  # mean 51, std 1
    assert T.pooled_std(a, b) == pytest.approx(2.5**0.5)  # sqrt((4 + 1) / 2) = 1.5811
    assert T.compare_cells(a, b) == {
        "margin": 11.0,
        "std": pytest.approx(1.5811, abs=1e-4),
        "seeds": (3, 3),
        "status": "holds",
    }
    assert T.compare_cells(b, a)["status"] == "fails"
    one = T.seed_value(_rotation_store(moco=(62.0,)))
    assert T.pooled_std(one, b) is None and T.compare_cells(one, b)["status"] == "unknown"


def test_verdict_agrees_beyond_two_pooled_stds():
    # 62 (std 2) vs 51 (std 1): margin 11 > 2 x 1.5811 = 3.162
    c = _check(ADD_ROT, moco=(60.0, 62.0, 64.0), moco_rot=(50.0, 51.0, 52.0))
    assert (c["verdict"], c["ours"], c["margin"], c["seeds"]) == ("agrees", True, 11.0, (3, 3))
    assert c["std"] == pytest.approx(1.5811, abs=1e-4)
    assert (
        c["numbers"]
        == "MoCo Rotation/Acc.: 62.0 ± 2.0 (paper 61.1); MoCo + Rotation Rotation/Acc.: 51.0 ± 1.0 (paper 43.3)"
    )


def test_verdict_disagrees_beyond_minus_two_pooled_stds():
    # 42 (std 2) vs 51 (std 1): margin -9 < -3.162
    c = _check(ADD_ROT, moco=(40.0, 42.0, 44.0), moco_rot=(50.0, 51.0, 52.0))
    assert (c["verdict"], c["ours"], c["margin"]) == ("disagrees", False, -9.0)


def test_verdict_inconclusive_within_two_pooled_stds():
    # 54 (std 2) vs 51 (std 1): margin 3.0 <= 3.162; the means alone say the inequality holds
    c = _check(ADD_ROT, moco=(52.0, 54.0, 56.0), moco_rot=(50.0, 51.0, 52.0))
    assert (c["verdict"], c["ours"], c["margin"]) == ("inconclusive", True, 3.0)
    assert c["std"] == pytest.approx(1.5811, abs=1e-4)
    # the same margin the other way round: inconclusive too, not disagrees
    c = _check(ADD_ROT, moco=(46.0, 48.0, 50.0), moco_rot=(50.0, 51.0, 52.0))
    assert (c["verdict"], c["ours"], c["margin"]) == ("inconclusive", False, -3.0)


def test_verdict_of_a_single_seed_comparison_is_inconclusive_with_std_na():
    # a margin of 11 points, but MoCo has one seed: its std, hence the pooled std, is unknown
    c = _check(ADD_ROT, moco=(62.0,), moco_rot=(50.0, 51.0, 52.0))
    assert (c["verdict"], c["ours"], c["margin"], c["std"], c["seeds"]) == ("inconclusive", True, 11.0, None, (1, 3))
    md = T.findings_markdown(_rotation_store(moco=(62.0,), moco_rot=(50.0, 51.0, 52.0)), "small", ["rotation"])
    assert "lowers rotation accuracy | inconclusive | +11.0 | n/a | 1 vs 3 | MoCo Rotation/Acc.: 62.0 (paper" in md


def test_verdict_no_data_where_a_cell_is_missing():
    c = _check(ADD_ROT, moco=(60.0, 62.0, 64.0))
    assert (c["verdict"], c["ours"], c["margin"], c["std"], c["seeds"]) == ("no data", None, None, None, None)
    assert "MoCo + Rotation Rotation/Acc.: – (paper 43.3)" in c["numbers"]
    md = T.findings_markdown(_rotation_store(moco=(60.0, 62.0, 64.0)), "small", ["rotation"])
    assert "lowers rotation accuracy | no data | – | – | – |" in md


def test_verdict_of_several_inequalities_is_decided_by_the_weakest_established_one():
    # LooC 71 (std 1) > MoCo 68 (std 0.1): margin 3.0, 2 x sqrt((1 + 0.01) / 2) = 1.421: holds;
    # LooC 71 > MoCo + Rotation 64 (std 8): margin 7.0, 2 x sqrt((1 + 64) / 2) = 11.40: within -> inconclusive,
    # decided by that inequality although its margin is the larger one
    c = _check(LOOC_ROT, looc=(70.0, 71.0, 72.0), moco=(67.9, 68.0, 68.1), moco_rot=(56.0, 64.0, 72.0))
    assert (c["verdict"], c["margin"], c["seeds"]) == ("inconclusive", 7.0, (3, 3))
    assert c["std"] == pytest.approx(32.5**0.5)
    # LooC 71 < MoCo 80.5 (std 0.5): margin -9.5 beyond 2 x sqrt((1 + 0.25) / 2) = 1.581: fails, whatever the other
    c = _check(LOOC_ROT, looc=(70.0, 71.0, 72.0), moco=(80.0, 80.5, 81.0), moco_rot=(56.0, 64.0, 72.0))
    assert (c["verdict"], c["margin"], c["std"]) == ("disagrees", -9.5, pytest.approx(0.625**0.5))
    # both hold: the smaller margin decides
    c = _check(LOOC_ROT, looc=(70.0, 71.0, 72.0), moco=(67.9, 68.0, 68.1), moco_rot=(50.0, 51.0, 52.0))
    assert (c["verdict"], c["margin"], c["std"]) == ("agrees", 3.0, pytest.approx(0.505**0.5))


def test_plots_write_pngs(tmp_path):
    from cssl_bench.results import plots

    s = plots.methods_series(RECORDS, "small")
    assert s["ours"]["SimCLR (repro.+)"] == [(B[100], 30.11), (B[200], 35.22), (B[400], 40.33), (B[800], 45.44)]
    assert s["paper"]["SimSiam"] == [(100, 68.1), (200, 70.0), (400, 70.8), (800, 71.3)]
    names, rows = plots.corruption_bars(RECORDS, "small")
    assert names == ["gaussian_noise", "fog"]
    # mean over severities 1..5: 60 - 5 * 3 = 45 and 50 - 2 * 3 = 44; the supervised row lacks fog
    assert dict(rows)["MoCo (Rot. no, Tex. no)"] == [45.0, 44.0]
    assert dict(rows)["Supervised (Rot. no, Tex. no)"] == [25.0, None]
    for name in NAMES:  # every table has a figure (tests/test_plots.py checks what they draw)
        out = plots.plot(name, RECORDS, "small", tmp_path / f"{name}.png")
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(UserError):
        plots.plot("table9", RECORDS, "small", tmp_path / "x.png")
    with pytest.raises(UserError):
        plots.plot("methods", [], "small", tmp_path / "y.png")


def test_cli_table(cli, tmp_path):
    from cssl_bench.results.store import ResultsStore

    ResultsStore(tmp_path).append(RECORDS)
    r = cli("table", "looc-t1", "--results", tmp_path, "--scale", "small")  # default: the paper's numbers beside ours
    assert r.returncode == 0, r.stderr
    assert r.stdout == (GOLDEN / "rotation-compare.md").read_text()
    r = cli("table", "looc-t1", "--results", tmp_path, "--scale", "small", "--compare", "none")
    assert r.returncode == 0, r.stderr
    assert r.stdout == (GOLDEN / "rotation.md").read_text()
    r = cli("table", "looc-t1", "--results", tmp_path, "--compare", "both")
    assert r.returncode == 2 and "choose from paper, none" in r.stderr
    r = cli("table", "--list")
    assert r.returncode == 0 and all(n in r.stdout for n in NAMES + ["looc-t5"])
    r = cli("table", "heads", "--results", tmp_path, "--format", "xml")
    assert r.returncode == 2 and r.stderr.startswith("error: unknown format") and len(r.stderr.splitlines()) == 1
    r = cli("plot", "simsiam-t4", "--results", tmp_path, "--scale", "small")
    assert r.returncode == 0, r.stderr
    assert (
        Path(r.stdout.strip()) == tmp_path / "plots" / "methods.png"
        and (tmp_path / "plots" / "methods.png").stat().st_size > 1000
    )


def _three_seeds() -> list[dict]:
    """SimCLR at the small scale's 100-epoch budget under seeds 0, 1, 2 (and SimSiam with seed 0 only)."""
    f = Fixture()
    for s, v in enumerate((44.0, 46.0, 49.0)):
        f.add("simclr", lin(v), epochs=B[100], protocol="simsiam", seed=s)
    f.add("simsiam", lin(40.0), epochs=B[100], protocol="simsiam", seed=0)
    return f.records


def test_a_cell_of_several_seeds_shows_mean_and_sample_std():
    # 44, 46, 49: mean 46.333, deviations -2.333, -0.333, 2.667: sum of squares 12.667 / 2 = 6.333, sd 2.517
    t, v = cell("methods", 0, "100 ep", _three_seeds())
    assert (v.n, v.mean) == (3, pytest.approx(46.3333, abs=1e-4)) and v.std == pytest.approx(2.5166, abs=1e-4)
    assert T.fmt_value(v, "66.5") == "46.3 ± 2.5"
    _, rows = T.flat_rows(t)
    assert rows[0][4] == "46.3 ± 2.5" and rows[4][4] == "40.0"  # one seed: no ±
    assert "46.3 ± 2.5" in T.render(t, "csv").splitlines()[1] and "| 46.3 ± 2.5 |" in T.render(t, "md")
    assert T.parse_paper("46.3 ± 2.5") == 46.3 and T.parse_paper("68.5 (±6.4)") == 68.5
    js = json.loads(T.render(t, "json"))["rows"][0]["100 ep"]
    assert (js["ours"], js["std"], js["n"], js["text"]) == (46.33, 2.517, 3, "46.3 ± 2.5")


def test_seeds_option_keeps_seeds_0_to_n_minus_1_and_names_cells_with_fewer():
    t = T.build("methods", _three_seeds(), "small", seeds=2)
    v = t.ours[0][t.headers.index("100 ep")]
    assert (v.n, v.mean, [r["seed"] for r in v.records]) == (2, 45.0, [0, 1]) and v.std == pytest.approx(2**0.5)
    assert "Seeds 0-1 only (--seeds 2). Fewer than 2: SimSiam: 1 seed." in t.caption
    assert "SimCLR" not in t.caption.split("Fewer than")[1]
    t1 = T.build("methods", _three_seeds(), "small", seeds=1)
    assert t1.ours[0][t1.headers.index("100 ep")].mean == 44.0 and t1.caption.endswith("Seed 0 only (--seeds 1).")
    t3 = T.build(
        "methods",
        _three_seeds() + Fixture().add("simclr", lin(50.0), epochs=B[200], protocol="simsiam").records,
        "small",
        seeds=3,
    )
    assert t3.ours[0][t3.headers.index("100 ep")].n == 3
    assert t3.caption.endswith("Fewer than 3: SimCLR (repro.+): 1 seed in 200 ep; SimSiam: 1 seed.")
    assert T.build("methods", _three_seeds(), "small").ours[0][4].n == 3  # default: every seed
    for bad in (0, -1):
        with pytest.raises(UserError, match="--seeds must be an integer >= 1") as e:
            T.build("methods", _three_seeds(), "small", seeds=bad)
        assert e.value.exit_code == 2


def _init(value, seed=0, bn=None, metric="knn/top1", time="2025-01-01T00:00:00"):
    rec = {
        "id": f"i{seed}{bn}",
        "run_id": f"init-s{seed}",
        "method": "moco-v2",
        "dataset": "embedded",
        "pretrain_dataset": "embedded",
        "scale": "tiny",
        "backbone": "resnet18-w0.25",
        "epochs": 0,
        "batch": 128,
        "seed": seed,
        "feature": "backbone",
        "protocol": {"name": "knn", "k": 200, "temperature": 0.1},
        "metric": metric,
        "value": value,
        "time": time,
        "data_options": {"embedded_version": T.EMBEDDED_VERSION},
    }  # a new record: the current generator
    if bn:
        rec.update(
            init_bn=bn,
            bn_estimate={"dataset": "embedded", "split": "train", "images": 9984, "batch_size": 256, "seed": 0},
        )
    return rec


def test_bn_on_data_records_are_their_own_family_and_fill_no_table_cell():
    plain, data = _init(29.3), _init(19.45, bn="data", time="2025-02-01T00:00:00")  # newer: would win a plain select
    assert T.family(plain) != T.family(data) and T.bn_on_data(data) and not T.bn_on_data(plain)
    q = {"metric": "knn/top1", "dataset": "embedded", "epochs": 0}
    assert T.select([plain, data], q).mean == 29.3 and T.select([data], q) is None
    assert T.select([plain, data], {**q, "init_bn": "data"}).mean == 19.45
    # a trained cell is never filled by a --bn-data probe of the same checkpoint
    f = Fixture().add("simclr", lin(30.0), epochs=B[100], protocol="simsiam").records
    f.append(dict(f[0], id="bn", value=90.0, init_bn="data", time="2026-01-01T00:00:00"))
    assert cell("methods", 0, "100 ep", f)[1].mean == 30.0


def test_the_random_init_baseline_compared_against_is_the_higher():
    recs = [_init(29.3, 0), _init(31.3, 1), _init(19.0, 0, "data"), _init(20.0, 1, "data")]
    base = T.random_init_baselines(recs, "knn/top1", "embedded", "tiny")
    assert (base["init"].mean, base["data"].mean) == (30.3, 19.5)
    assert T.higher_baseline(base) == ("init", base["init"])
    recs2 = [_init(12.9, 0), _init(19.45, 0, "data")]  # either can be higher
    assert T.higher_baseline(T.random_init_baselines(recs2, "knn/top1", "embedded"))[0] == "data"
    assert T.higher_baseline({"init": None, "data": None}) is None
    assert T.higher_baseline(T.random_init_baselines(recs[:2], "knn/top1", "embedded"))[0] == "init"


def test_baseline_summary_rows_mean_std_and_delta_against_the_higher_baseline():
    """The demo's summary: both baselines, then each trained checkpoint; mean ± sample std over seeds, Δ against the
    higher baseline (BN on data here), per-seed values in the caption."""

    def trained(method, epochs, value, seed):
        return dict(_init(value, seed), method=method, epochs=epochs, run_id=f"{method}-s{seed}")

    recs = [
        _init(12.0, 0),
        _init(14.0, 1),
        _init(20.0, 0, "data"),
        _init(22.0, 1, "data"),
        trained("simclr", 2, 30.0, 0),
        trained("simclr", 2, 34.0, 1),
        trained("simclr", 1, 18.0, 0),
        trained("simclr", 1, 19.0, 1),
        trained("moco-v2", 1, 17.0, 0),
        trained("moco-v2", 1, 18.0, 1),
        dict(_init(99.0, 0), metric="knn/top5"),
    ]  # another metric: ignored
    rows, caption = T.baseline_summary(recs, "knn/top1", "embedded")
    got = [(r["label"], r["epochs"], r["text"], r["delta"]) for r in rows]
    assert got == [
        ("random init (as initialised)", 0, "13.0 ± 1.4", "-8.0"),
        ("random init (BN on data)", 0, "21.0 ± 1.4", ""),
        ("simclr", 1, "18.5 ± 0.7", "-2.5"),
        ("simclr", 2, "32.0 ± 2.8", "+11.0"),
        ("moco-v2", 1, "17.5 ± 0.7", "-3.5"),
    ]
    assert caption.startswith("Δ against the higher random-init baseline: random init (BN on data).")
    assert (
        "Per seed (0, 1): random init (as initialised): 12.0 / 14.0; random init (BN on data): 20.0 / 22.0; simclr e1: 18.0 / 19.0;"
        in caption
    )
    one = T.baseline_summary([r for r in recs if r["seed"] == 0], "knn/top1", "embedded")[0]
    assert [(r["text"], r["delta"]) for r in one[:3]] == [("12.0", "-8.0"), ("20.0", ""), ("18.0", "-2.0")]
    assert T.baseline_summary([], "knn/top1", "embedded") == ([], "")


def test_cli_table_seeds(tmp_path):
    from cssl_bench.results.store import ResultsStore
    from tests.conftest import run_cli_here

    ResultsStore(tmp_path).append(_three_seeds())
    r = run_cli_here(
        "table",
        "methods",
        "--results",
        tmp_path,
        "--scale",
        "small",
        "--seeds",
        "2",
        "--compare",
        "none",
        "--format",
        "csv",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[1].split(",")[4] == "45.0 ± 1.4"
    for bad in ("0", "-2"):
        r = run_cli_here("table", "methods", "--results", tmp_path, "--seeds", bad)
        assert r.returncode == 2 and r.stderr.strip() == f"error: --seeds must be an integer >= 1, got {bad}"


def test_caption_states_the_higher_random_init_baseline_per_column_with_mean_and_std():
    """Epoch-0 records (as initialised, and BN on data) of a table's columns: the caption gives the higher of the two
    per column, mean ± sample std over seeds; columns without such records are not named; cells are untouched."""

    def base(metric, values, bn=None, protocol="looc", time="2025-01-01T00:00:00"):
        return [
            dict(_init(v, seed, bn, metric, time), id=f"{metric}-{bn}-{protocol}-{seed}", protocol={"name": protocol})
            for seed, v in enumerate(values)
        ]

    trained = Fixture().add("moco-v2", {"rotation/acc": 60.0, **lin(50.0, 80.0)}, scale="tiny", epochs=2).records
    recs = (
        trained
        + base("rotation/acc", (40.0, 42.0))  # as initialised: 41.0 ± 1.4
        + base("rotation/acc", (45.0, 46.0), "data")  # BN on data: 45.5 ± 0.7, the higher
        + base("linear/top1", (30.0, 32.0))  # 31.0 ± 1.4, the higher
        + base("linear/top1", (20.0, 21.0), "data")  # 20.5 ± 0.7
        + base("linear/top1", (99.0,), "data", protocol="moco", time="2026-01-01T00:00:00")  # not the column's protocol
    )
    t = T.build("rotation", recs, "tiny")
    assert {h: (k, round(v.mean, 2), round(v.std, 3), v.n) for h, (k, v) in t.baselines.items()} == {
        "Rotation/Acc.": ("data", 45.5, 0.707, 2),
        "IN-100/top-1": ("init", 31.0, 1.414, 2),
    }
    assert t.caption.endswith(
        " Random init (epoch 0; the higher of as initialised / BN statistics on data): "
        "Rotation/Acc. 45.5 ± 0.7 (BN on data; seeds 0, 1); IN-100/top-1 31.0 ± 1.4 (as initialised; seeds 0, 1)."
    )
    assert t.ours[1][t.headers.index("IN-100/top-1")].mean == 50.0  # the MoCo row's cell: its trained record
    assert t.caption in T.render(t, "md") and t.caption in T.render(t, "md", compare=True)
    j = json.loads(T.render(t, "json"))
    assert j["random_init"]["Rotation/Acc."] == {
        "baseline": "data",
        "label": "random init (BN on data)",
        "mean": 45.5,
        "std": 0.707,
        "n": 2,
        "text": "45.5 ± 0.7",
    }
    assert "IN-100/top-5" not in j["random_init"]
    # --seeds 1: seed 0 only, one value, no ±; a tie goes to "as initialised"
    t1 = T.build("rotation", recs, "tiny", seeds=1)
    assert "Rotation/Acc. 45.0 (BN on data; seed 0); IN-100/top-1 30.0 (as initialised; seed 0)." in t1.caption
    # SimSiam Table 4's epoch columns share one baseline (linear top-1, simsiam protocol): named together
    t4 = T.build("methods", base("linear/top1", (35.0,), protocol="simsiam"), "tiny")
    assert t4.caption.endswith("data): 100 ep, 200 ep, 400 ep, 800 ep 35.0 (as initialised; seed 0).")
    # no epoch-0 records: no sentence, no JSON key
    t0 = T.build("rotation", trained, "tiny")
    assert t0.baselines == {} and "Random init" not in t0.caption and "random_init" not in T.render(t0, "json")
