"""Does the demo give the same numbers in fresh checkouts? `make demo` in N clones, each with an empty cache.

For each clone: ``git clone`` of this repository (its committed HEAD) into ``WORKDIR/clone-I``, then
``make demo`` there with ``CSSL_BENCH_CACHE=WORKDIR/cache-I`` (empty: the embedded dataset is generated again)
and ``OMP_NUM_THREADS`` from ``--threads`` (one value per clone, cycled: a different thread count changes the
floating-point reductions, the strongest variation one machine offers). Then it reads each clone's demo store
(``runs/demo/results/records.jsonl``) and compares the final checkpoint's kNN and linear top-1 of each method
across clones against the seed spread of the same recipe: the sample std over seeds of a ``cssl-bench demo
--seeds N`` store given with ``--seeds-store`` (run it on the same machine: the precision and the thread count
change the numbers), else of seeds 0-2 in ``benchmarks/results/learning_tiny.json``. The check holds when the
largest difference between clones is at most that std. Prints a table and writes JSON; times are wall clock on a shared machine (install, then demo).

    python benchmarks/demo_repeat.py --clones 2 --threads 1,2 --workdir /tmp/demo-repeat
    python benchmarks/demo_repeat.py --existing /tmp/demoA:1 /tmp/demoB:2   # clones already run by hand
    python benchmarks/demo_repeat.py --existing /tmp/demoA:1 /tmp/demoB:2 --seeds-store runs/demo3/results

``--existing CLONE:THREADS`` summarises clones in which ``make demo`` already ran (the demo's time is then read
from the install stamp and the last record's time).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# the demo's method names -> the keys of the same tiny recipes in learning_tiny.json
LEARNING_KEYS = {"simclr": "simclr", "moco-v2": "moco-v2-sym"}
METRICS = ("knn/top1", "linear/top1")


def _records(clone: Path) -> list[dict]:
    path = clone / "runs" / "demo" / "results" / "records.jsonl"
    if not path.exists():
        sys.exit(f"error: {path} not found: did `make demo` finish in {clone}?")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summarise(clone: Path, threads: int, wall_s: float | None = None) -> dict:
    """Final-checkpoint kNN / linear top-1 per method, the baselines, and the demo's times of one clone."""
    recs = _records(clone)
    final: dict[str, dict] = {}
    last_epoch: dict[str, int] = {}
    for r in recs:
        if r["metric"] not in METRICS:
            continue
        if r["epochs"] == 0:  # the random-init run, probed as initialised and with BN statistics on data
            name = "random init (BN on data)" if r.get("bn_estimate") else "random init (as initialised)"
        else:
            name = r["method"]
            if r["epochs"] < last_epoch.get(name, 0):
                continue
            if r["epochs"] > last_epoch.get(name, 0):
                final.pop(name, None)
                last_epoch[name] = r["epochs"]
        final.setdefault(name, {})[r["metric"]] = r["value"]
    stamp = clone / ".venv" / ".installed"
    times = sorted(datetime.fromisoformat(r["time"].replace("+0000", "+00:00")).timestamp() for r in recs)
    demo_s = round(times[-1] - stamp.stat().st_mtime, 1) if stamp.exists() else None
    head = subprocess.run(["git", "-C", str(clone), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return {
        "clone": str(clone),
        "commit": head.stdout.strip(),
        "threads": threads,
        "precision": sorted({r.get("precision") for r in recs}),
        "code_version": sorted({r.get("code_version") for r in recs}),
        "epochs": last_epoch,
        "values": final,
        "demo_seconds": demo_s,
        "wall_seconds_with_install": wall_s,
    }


def run_clone(workdir: Path, i: int, threads: int) -> dict:
    clone, cache = workdir / f"clone-{i}", workdir / f"cache-{i}"
    for p in (clone, cache):
        if p.exists():
            sys.exit(f"error: {p} exists; give an empty --workdir")
    cache.mkdir(parents=True)
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    env = {**os.environ, "CSSL_BENCH_CACHE": str(cache), "OMP_NUM_THREADS": str(threads)}
    t0 = time.time()
    with open(workdir / f"demo-{i}.log", "w") as log:
        rc = subprocess.run(["make", "demo"], cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        sys.exit(f"error: make demo failed in {clone} (exit {rc}); see {workdir / f'demo-{i}.log'}")
    return summarise(clone, threads, round(time.time() - t0, 1))


def seed_stds(store: Path | None) -> tuple[dict, str]:
    """{(method, metric): sample std over seeds} of the final checkpoints, and where it comes from."""
    if store is None:
        learning = json.loads((REPO / "benchmarks" / "results" / "learning_tiny.json").read_text())["methods"]
        stds = {
            (m, metric): learning[k][metric.split("/")[0]]["std"]
            for m, k in LEARNING_KEYS.items()
            for metric in METRICS
            if k in learning
        }
        return stds, "benchmarks/results/learning_tiny.json (seeds 0-2 of the same tiny recipes)"
    path = store / "records.jsonl"
    if not path.exists():
        sys.exit(f"error: {path} not found (--seeds-store takes a demo's results folder)")
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    last = {}
    for r in recs:
        if r["metric"] in METRICS and r["epochs"] > 0:
            last[r["method"]] = max(last.get(r["method"], 0), r["epochs"])
    per_seed: dict = {}
    for r in recs:
        if r["metric"] in METRICS and r["epochs"] > 0 and r["epochs"] == last[r["method"]]:
            per_seed.setdefault((r["method"], r["metric"]), {})[r["seed"]] = r["value"]
    stds = {k: round(statistics.stdev(v.values()), 2) for k, v in per_seed.items() if len(v) > 1}
    seeds = sorted({s for v in per_seed.values() for s in v})
    values = ", ".join(f"{m} {metric} {list(v.values())}" for (m, metric), v in sorted(per_seed.items()))
    return stds, f"{store}: cssl-bench demo, seeds {seeds} ({values})"


def compare(clones: list[dict], stds: dict) -> list[dict]:
    rows = []
    for method in LEARNING_KEYS:
        for metric in METRICS:
            vals = [c["values"].get(method, {}).get(metric) for c in clones]
            std = stds.get((method, metric))
            if None in vals or std is None:
                rows.append({"method": method, "metric": metric, "values": vals, "seed_std": std, "holds": None})
                continue
            diff = round(max(vals) - min(vals), 2)
            rows.append(
                {
                    "method": method,
                    "metric": metric,
                    "values": vals,
                    "max_diff": diff,
                    "seed_std": std,
                    "holds": diff <= std,
                }
            )
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clones", type=int, default=2, help="how many fresh clones to run (default 2)")
    ap.add_argument("--threads", default="1,2", help="OMP_NUM_THREADS per clone, comma-separated, cycled")
    ap.add_argument("--workdir", type=Path, help="an empty folder for the clones, caches and logs")
    ap.add_argument("--existing", nargs="+", metavar="CLONE:THREADS", help="summarise clones already run")
    ap.add_argument("--seeds-store", type=Path, help="results folder of `cssl-bench demo --seeds N` (the yardstick)")
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "demo_repeat.json")
    a = ap.parse_args(argv)
    if a.existing:
        clones = []
        for spec in a.existing:
            path, _, threads = spec.rpartition(":")
            if not path or not threads.isdigit():
                sys.exit(f"error: --existing takes CLONE:THREADS, got {spec!r}")
            clones.append(summarise(Path(path), int(threads)))
    else:
        if a.workdir is None:
            sys.exit("error: give --workdir (an empty folder) or --existing")
        threads = [int(t) for t in a.threads.split(",")]
        clones = [run_clone(a.workdir, i, threads[i % len(threads)]) for i in range(a.clones)]
    stds, std_from = seed_stds(a.seeds_store)
    rows = compare(clones, stds)
    print(
        "| method | metric | "
        + " | ".join(f"clone {i} ({c['threads']} thr)" for i, c in enumerate(clones))
        + " | max diff | seed std | holds |"
    )
    print("|---|---|" + "---|" * len(clones) + "---|---|---|")
    for r in rows:
        print(
            f"| {r['method']} | {r['metric']} | "
            + " | ".join(str(v) for v in r["values"])
            + f" | {r.get('max_diff', '–')} | {r['seed_std']} | {r['holds']} |"
        )
    for i, c in enumerate(clones):
        print(f"clone {i}: {c['clone']} at {c['commit']}, demo {c['demo_seconds']} s, precision {c['precision']}")
    out = {
        "command": "python benchmarks/demo_repeat.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "processor": platform.processor()},
        "seed_std_from": std_from,
        "clones": clones,
        "comparison": rows,
        "holds": all(r["holds"] for r in rows),
    }
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(out, indent=1) + "\n")
    print(f"-> {a.json}")
    return 0 if out["holds"] else 1


if __name__ == "__main__":
    sys.exit(main())
