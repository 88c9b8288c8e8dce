"""Every table's figure (``cssl_bench/results/plots.py``) on a small hand-written store: a valid PNG, written
atomically, and the numbers drawn compared with values computed by hand from the records: the bar of a cell is
its mean over seeds, its error bar the sample std of the seeds (none for one seed), the dashed line the higher of
the two random-init baselines of the column's metric on its dataset (none, and the legend says so, where there
are no such records)."""

from __future__ import annotations

import pytest
from PIL import Image

from cssl_bench import UserError
from cssl_bench.results import plots
from cssl_bench.results import tables as T
from tests.test_tables import B, Fixture, lin

ALL3 = ["color", "rotation", "texture"]


def _bn_on_data(records: list[dict]) -> list[dict]:
    return [dict(r, init_bn="data") for r in records]


def store() -> list[dict]:
    f = Fixture()
    # methods: SimCLR at the 100-epoch budget under three seeds, SimSiam under one
    for s, v in enumerate((44.0, 46.0, 49.0)):
        f.add("simclr", lin(v), epochs=B[100], protocol="simsiam", seed=s)
    f.add("simsiam", lin(40.0), epochs=B[100], protocol="simsiam")
    # transfer: SimCLR's VOC 07 AP under three seeds; epoch-0 records are both the scratch row and a baseline
    for s, v in enumerate((30.0, 32.0, 34.0)):
        f.add("simclr", {"voc07/ap": v}, dataset="embedded-det", epochs=B[200], protocol="detection", seed=s)
    for s, v in enumerate((5.0, 7.0)):
        f.add("scratch", {"voc07/ap": v}, dataset="embedded-det", epochs=0, protocol="detection", seed=s)
    # rotation: LooC + Rotation under three seeds; no random-init record of rotation/acc
    for s, v in enumerate((60.0, 61.0, 65.0)):
        f.add("looc", {"rotation/acc": v}, protocol="rotation", augment=["rotation"], seed=s)
    # finegrained: MoCo on iNat-1k under two seeds
    for s, v in enumerate((36.0, 38.0)):
        f.add("moco-v2", {"finegrained/top1": v}, dataset="embedded-fine", protocol="finegrained", seed=s)
    f.add("moco-v2", {"finegrained/top1": 20.0}, dataset="embedded-fine", epochs=0, protocol="finegrained")
    # robustness: LooC with texture on IN-C-100 All under three seeds
    for s, v in enumerate((50.0, 52.0, 57.0)):
        f.add("looc", {"corruption/all": v}, protocol="corruption", augment=["texture"], seed=s)
    # heads: LooC++ with every head, IN-100 top-1 under three seeds
    for s, v in enumerate((80.0, 82.0, 84.0)):
        f.add("looc", lin(v), augment=ALL3, feature="concat", seed=s)
    records = f.records
    # random-init baselines of linear/top1 on embedded (ImageNet's and IN-100's stand-in): as initialised 10, 12
    # (mean 11), with BN on data 15, 16 (mean 15.5, the higher); VOC 07 AP with BN on data 9 (above scratch's 6)
    g = Fixture()
    for s, v in enumerate((10.0, 12.0)):
        g.add("moco-v2", lin(v), epochs=0, protocol="simsiam", seed=s)
    init = g.records
    g = Fixture()
    for s, v in enumerate((15.0, 16.0)):
        g.add("moco-v2", lin(v), epochs=0, protocol="simsiam", seed=s)
    g.add("moco-v2", {"voc07/ap": 9.0}, dataset="embedded-det", epochs=0, protocol="detection")
    return records + init + _bn_on_data(g.records)


RECORDS = store()

# table -> (column, row index, mean, error bar, seeds, dashed line, which baseline), computed by hand:
# 44, 46, 49: mean 46.333, squared deviations 5.444 + 0.111 + 7.111 = 12.667, / 2 -> std 2.5166
# 30, 32, 34: std 2; 60, 61, 65: mean 62, (4 + 1 + 9) / 2 = 7 -> std 2.6458; 36, 38: std 1.4142
# 50, 52, 57: mean 53, (9 + 1 + 16) / 2 = 13 -> std 3.6056; 80, 82, 84: std 2
EXPECTED = {
    "methods": ("100 ep", 0, 46.3333, 2.5166, 3, 15.5, "data"),
    "transfer": ("VOC 07 detection/AP", 2, 32.0, 2.0, 3, None, None),  # detection: scratch is a row, not a line
    "rotation": ("Rotation/Acc.", 4, 62.0, 2.6458, 3, None, None),
    "finegrained": ("iNat-1k/top-1", 0, 37.0, 1.4142, 2, 20.0, "init"),
    "robustness": ("IN-C-100 (top-1)/All", 3, 53.0, 3.6056, 3, None, None),
    "heads": ("IN-100/top-1", 4, 82.0, 2.0, 3, 15.5, "data"),
}


def _panel(tf: plots.TableFigure, header: str) -> plots.Panel:
    (p,) = [p for p in tf.panels if p.header == header]
    return p


@pytest.mark.parametrize("name", list(T.TABLES))
def test_every_table_draws_a_png_from_its_cells_seeds_and_baseline(name, tmp_path):
    out = tmp_path / "plots" / f"{name}.png"
    tf = plots.draw(name, RECORDS, "small", out)
    assert tf.path == out and tf.table == name and tf.scale == "small"
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200
    assert sorted(p.name for p in out.parent.iterdir()) == [f"{name}.png"]  # no temporary file left behind
    header, row, mean, err, seeds, line, kind = EXPECTED[name]
    p = _panel(tf, header)
    assert p.means[row] == pytest.approx(mean, abs=1e-4)
    assert p.errors[row] == pytest.approx(err, abs=1e-4)
    assert p.seeds[row] == seeds
    assert (p.baseline, p.baseline_kind) == (line, kind)
    # the panels are the table's metric columns, and their bars its cells
    t = T.build(name, RECORDS, "small")
    assert [q.header for q in tf.panels] == [h for h, c in zip(t.headers, t.cells) if c is not None]
    for q in tf.panels:
        j = t.headers.index(q.header)
        assert q.means == [v.mean if isinstance(v, T.Value) else None for v in (o[j] for o in t.ours)]
    # drawing is computing: the same numbers without a figure
    assert plots.table_figure(name, RECORDS, "small").panels == tf.panels


def test_one_seed_has_no_error_bar_and_the_methods_columns_share_the_baseline():
    tf = plots.table_figure("methods", RECORDS, "small")
    p = _panel(tf, "100 ep")
    assert (p.means[4], p.errors[4], p.seeds[4]) == (40.0, None, 1)  # SimSiam, one seed
    assert (p.means[1], p.errors[1], p.seeds[1]) == (None, None, 0)  # MoCo v2: no record
    assert p.baseline_seeds == 2 and p.paper[4] == 68.1
    assert {q.baseline for q in tf.panels} == {15.5}  # every epoch column: linear top-1 on embedded


def test_transfer_scratch_is_a_bar_not_a_dashed_line():
    """Detection is fine-tuned: its random init is SimSiam Table 5's scratch row, drawn as a bar; the epoch-0
    detection records are no frozen-backbone baseline (the table's caption leaves detection out too)."""
    p = _panel(plots.table_figure("transfer", RECORDS, "small"), "VOC 07 detection/AP")
    assert (p.rows[0], p.means[0], p.errors[0]) == ("scratch", 6.0, pytest.approx(2**0.5))
    assert (p.baseline, p.baseline_kind) == (None, None)
    assert "VOC 07 detection/AP" not in T.build("transfer", RECORDS, "small").baselines


def test_the_legend_says_where_there_is_no_baseline():
    tf = plots.table_figure("rotation", RECORDS, "small")
    assert [q.baseline for q in tf.panels] == [None, 15.5, None]  # rotation/acc and linear/top5 have no records
    assert plots._baseline_note(tf.panels) == "no random-init baseline records for Rotation/Acc., IN-100/top-5"
    labels = [h.get_label() for h in plots._legend_extras(tf.panels)]
    assert plots.BASELINE_LINE in labels and plots.ERROR_BARS in labels
    none = plots.table_figure("rotation", [r for r in RECORDS if r["epochs"] != 0], "small")
    assert plots._baseline_note(none.panels) == "no random-init baseline records: no dashed line"
    assert plots.BASELINE_LINE not in [h.get_label() for h in plots._legend_extras(none.panels)]


def test_no_results_is_a_user_error_and_plot_all_skips_such_tables(tmp_path):
    for name in T.TABLES:
        with pytest.raises(UserError, match=f"no {name}-table results at scale small"):
            plots.plot(name, [], "small", tmp_path / f"{name}.png")
    assert not list(tmp_path.iterdir())
    only_rotation = [r for r in RECORDS if r["metric"] == "rotation/acc"]
    written, skipped = plots.plot_all(only_rotation, "small", tmp_path / "plots")
    assert written == [tmp_path / "plots" / "rotation.png"] and len(skipped) == 5
    assert any("no heads-table results" in why for why in skipped)


def test_cli_plot_all(cli, tmp_path):
    from cssl_bench.results.store import ResultsStore

    ResultsStore(tmp_path).append(RECORDS)
    r = cli("plot", "all", "--results", tmp_path, "--scale", "small")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(tmp_path / "plots" / f"{n}.png") for n in T.TABLES]
    for n in T.TABLES:
        with Image.open(tmp_path / "plots" / f"{n}.png") as im:
            assert im.format == "PNG"
