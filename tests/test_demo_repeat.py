"""benchmarks/demo_repeat.py: reading demo stores of fresh clones and comparing them with the seed spread."""

import json
import os

import pytest

from tests.conftest import load_benchmark

dr = load_benchmark("demo_repeat")


def _rec(method, metric, value, epochs, seed=0, bn=False, t="2026-12-07T17:00:00+0000"):
    r = {"method": method, "metric": metric, "value": value, "epochs": epochs, "seed": seed, "time": t}
    r.update({"precision": "bf16", "code_version": "0.1.0+gabc"})
    if bn:
        r["bn_estimate"] = {"dataset": "embedded"}
    return r


def _clone(tmp_path, name, recs, installed_at):
    store = tmp_path / name / "runs" / "demo" / "results"
    store.mkdir(parents=True)
    (store / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    stamp = tmp_path / name / ".venv" / ".installed"
    stamp.parent.mkdir()
    stamp.touch()
    os.utime(stamp, (installed_at, installed_at))
    return tmp_path / name


def test_summarise_takes_the_last_checkpoint_and_both_baselines(tmp_path):
    recs = [
        _rec("moco-v2", "knn/top1", 44.2, 0),
        _rec("moco-v2", "knn/top1", 38.8, 0, bn=True),
        _rec("simclr", "knn/top1", 40.0, 1),
        _rec("simclr", "knn/top5", 90.0, 4),  # not a compared metric
        _rec("simclr", "knn/top1", 53.0, 4, t="2026-12-07T17:10:00+0000"),
        _rec("simclr", "linear/top1", 63.7, 4),
        _rec("simclr", "knn/top1", 45.0, 2),  # an earlier checkpoint written later must not win
    ]
    start = 1796662800.0  # 2026-12-07T17:00:00Z
    s = dr.summarise(_clone(tmp_path, "a", recs, start), threads=1)
    assert s["values"]["simclr"] == {"knn/top1": 53.0, "linear/top1": 63.7}
    assert s["values"]["random init (as initialised)"] == {"knn/top1": 44.2}
    assert s["values"]["random init (BN on data)"] == {"knn/top1": 38.8}
    assert s["epochs"] == {"simclr": 4}
    assert s["demo_seconds"] == 600.0
    assert s["cache_sha256"] is None
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "data.npz").write_bytes(b"abc")
    digests = dr.summarise(tmp_path / "a", threads=1, cache=cache)["cache_sha256"]
    assert digests == {"data.npz": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}


def test_seed_stds_from_a_demo_store_and_the_comparison(tmp_path):
    store = tmp_path / "seeds"
    store.mkdir()
    recs = [_rec("simclr", "knn/top1", v, 4, seed=s) for s, v in enumerate([50.0, 52.0, 54.0])]
    recs += [_rec("simclr", "knn/top1", 10.0, 1, seed=0)]  # earlier checkpoints do not count
    (store / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    stds, source = dr.seed_stds(store)
    assert stds == {("simclr", "knn/top1"): 2.0}
    assert "seeds [0, 1, 2]" in source
    clones = [{"values": {"simclr": {"knn/top1": 53.0}}}, {"values": {"simclr": {"knn/top1": 51.5}}}]
    rows = {(r["method"], r["metric"]): r for r in dr.compare(clones, stds)}
    assert rows[("simclr", "knn/top1")]["max_diff"] == 1.5 and rows[("simclr", "knn/top1")]["holds"] is True
    assert rows[("simclr", "linear/top1")]["holds"] is None  # no std and no values: not judged
    clones[1]["values"]["simclr"]["knn/top1"] = 50.5
    assert dr.compare(clones, stds)[0]["holds"] is False


def test_missing_store_is_one_line_error(tmp_path):
    with pytest.raises(SystemExit, match="did `make demo` finish"):
        dr.summarise(tmp_path, threads=1)
