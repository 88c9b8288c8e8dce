"""``cssl_bench.results.breakdown``: the per-corruption numbers behind a robustness row, computed by hand."""

from __future__ import annotations

import pytest

from cssl_bench.results.breakdown import corruption_breakdown
from tests.test_tables import Fixture, lin


def _probe(f: Fixture, run: str, seed: int, all_: float, per: dict[str, tuple[float, ...]], clean: float):
    metrics = {"corruption/all": all_}
    for name, by_severity in per.items():
        metrics.update({f"corruption/{name}/s{k}": v for k, v in enumerate(by_severity, 1)})
    f.add("looc", metrics, protocol="corruption", augment=["texture"], seed=seed, run=run)
    f.add("looc", lin(clean), augment=["texture"], seed=seed, run=run)


def test_breakdown_of_a_row_over_two_seeds():
    f = Fixture()
    _probe(f, "looc-tex-s0", 0, 50.0, {"brightness": (40.0, 60.0), "snow": (10.0, 20.0, 30.0)}, 70.0)
    _probe(f, "looc-tex-s1", 1, 56.0, {"brightness": (60.0, 80.0), "snow": (30.0, 30.0, 30.0)}, 74.0)
    # per-corruption records of another run (no All record, so no row of its own) stay out of this row
    f.add("looc", {"corruption/brightness/s1": 99.0}, protocol="corruption", augment=["rotation"], run="other")
    (row,) = corruption_breakdown(f.records, "small")
    assert row["row"].startswith("LooC") and "Tex. yes" in row["row"] and row["seeds"] == [0, 1]
    assert row["all"] == {"values": [50.0, 56.0], "mean": 53.0, "std": pytest.approx(4.24, abs=0.01)}
    assert row["clean"]["mean"] == 72.0
    # brightness: seed means 50 and 70 -> 60 ± 14.14; snow: 20 and 30 -> 25 ± 7.07
    assert row["corruptions"]["brightness"] == {
        "values": [50.0, 70.0],
        "mean": 60.0,
        "std": pytest.approx(14.14, abs=0.01),
    }
    assert row["corruptions"]["snow"]["values"] == [20.0, 30.0] and row["corruptions"]["snow"]["mean"] == 25.0
    assert set(row["corruptions"]) == {"brightness", "snow"}


def test_no_rows_without_an_all_value():
    f = Fixture()
    f.add("looc", {"corruption/brightness/s1": 40.0}, protocol="corruption", augment=["texture"])
    assert corruption_breakdown(f.records, "small") == []


def test_breakdown_of_a_heads_row_reads_its_concat_probe():
    """LooC Table 5 (``table="heads"``): the row of the colour head, read from its concat-feature probe; the same
    run's backbone-feature corruption records are another probe and stay out."""
    f = Fixture()
    all3 = ["color", "rotation", "texture"]
    for feature, level in (("concat", 60.0), ("backbone", 10.0)):
        metrics = {"corruption/all": level, "corruption/fog/s1": level - 10, "corruption/fog/s2": level + 10}
        f.add("looc", metrics, protocol="corruption", augment=all3, heads=["color"], feature=feature, run="r")
    f.add("looc", lin(80.0), augment=all3, heads=["color"], feature="concat", run="r")
    (row,) = corruption_breakdown(f.records, "small", table="heads")
    assert "Col. yes" in row["row"] and "Rot. no" in row["row"]
    assert row["all"]["values"] == [60.0] and row["clean"]["values"] == [80.0]
    assert row["corruptions"] == {"fog": {"values": [60.0], "mean": 60.0, "std": None}}
    with pytest.raises(ValueError, match="no IN-C-100 All column"):
        corruption_breakdown(f.records, "small", table="methods")


def test_breakdown_by_configuration_pools_seeds_and_separates_configurations():
    from cssl_bench.results.breakdown import corruption_by_config

    f = Fixture()
    for seed, (a, fog) in enumerate([(50.0, (10.0, 30.0)), (60.0, (30.0, 30.0))]):
        metrics = {"corruption/all": a, "corruption/fog/s1": fog[0], "corruption/fog/s2": fog[1]}
        f.add("looc", metrics, protocol="corruption", augment=["color"], heads=["color"], seed=seed, run=f"c{seed}")
    f.add("looc", {"corruption/all": 40.0}, protocol="corruption", augment=["rotation"], run="r0")
    f.add("looc", lin(70.0), augment=["color"], heads=["color"], run="c0")  # not a corruption probe
    rows = {r["config"]: r for r in corruption_by_config(f.records)}
    assert set(rows) == {"looc[color] backbone", "looc[rotation] backbone"}
    colour = rows["looc[color] backbone"]
    assert colour["seeds"] == [0, 1] and colour["all"]["mean"] == 55.0
    assert colour["corruptions"]["fog"]["values"] == [20.0, 30.0]  # per seed the mean over its severities
    assert rows["looc[rotation] backbone"]["all"] == {"values": [40.0], "mean": 40.0, "std": None}
