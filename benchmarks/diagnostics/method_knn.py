"""Per-method tiny-scale quality and speed: kNN top-1 after pretraining vs random init, and images/s.

For each method: ``cssl-bench pretrain NAME --scale SCALE --out OUT/NAME`` (skipped when complete),
the same recipe with ``--epochs 0`` (random init of the same backbone), ``cssl-bench probe knn`` on
both (with ``--linear`` also ``cssl-bench probe linear``, its default protocol, top-1), and the median
pretraining throughput from ``OUT/NAME/log.csv``. Runs one training at a time (the CPU is shared).
Prints a markdown table and writes ``OUT/summary.json`` (``--json`` also there).

    python benchmarks/diagnostics/method_knn.py --out /tmp/mknn                    # every method at tiny scale
    python benchmarks/diagnostics/method_knn.py --out /tmp/mknn moco-v2 simclr     # some methods
    python benchmarks/diagnostics/method_knn.py --out /tmp/mknn moco-v2 -- --set augment.crop_scale=[0.5,1]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from cssl_bench.config import builtin_methods  # noqa: E402
from cssl_bench.train.checkpoint import atomic_write_text  # noqa: E402

METHODS = builtin_methods()


def cli(*args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "cssl_bench", *args], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"cssl-bench {' '.join(args)} failed:\n{r.stderr[-2000:]}")
    return r.stdout


def probe_top1(run_dir: Path, results: Path, probe: str = "knn") -> float:
    recs = json.loads(cli("probe", probe, str(run_dir), "--json", "--results", str(results)))
    return next(r["value"] for r in recs if r["metric"] == f"{probe}/top1")


def images_per_s(run_dir: Path) -> float:
    with open(run_dir / "log.csv") as f:
        rows = [float(r["images_per_s"]) for r in csv.DictReader(f)]
    return statistics.median(rows[1:] if len(rows) > 1 else rows) if rows else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("methods", nargs="*", default=METHODS)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--scale", default="tiny")
    ap.add_argument("--tag", default="", help="suffix of the run folders (to compare recipe variants)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the random-init runs")
    ap.add_argument("--linear", action="store_true", help="also the linear probe (top-1) of both")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows, with the command, to this file")
    args, extra = ap.parse_known_args()
    extra = [a for a in extra if a != "--"]
    results = args.out / "results"
    rows = []
    for m in args.methods:
        run = args.out / f"{m.replace('+', 'p')}{args.tag}"
        t0 = time.time()
        if not (run / "run.json").exists() or '"complete"' not in (run / "run.json").read_text():
            cli(
                "pretrain",
                m,
                "--scale",
                args.scale,
                "--out",
                str(run),
                "--quiet",
                *(["--resume"] if (run / "config.yaml").exists() else []),
                *extra,
            )
        wall = time.time() - t0
        trained = probe_top1(run, results)
        base = None if args.no_baseline else args.out / f"{m.replace('+', 'p')}{args.tag}-init"
        if base is not None and not (base / "run.json").exists():
            cli("pretrain", m, "--scale", args.scale, "--epochs", "0", "--out", str(base), "--quiet", *extra)
        rand = None if base is None else probe_top1(base, results)
        row = {
            "method": m,
            "knn_trained": trained,
            "knn_random_init": rand,
            "images_per_s": images_per_s(run),
            "pretrain_wall_s": round(wall, 1),
        }
        if args.linear:
            row["linear_trained"] = probe_top1(run, results, "linear")
            row["linear_random_init"] = None if base is None else probe_top1(base, results, "linear")
        rows.append(row)
        print(json.dumps(row), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / f"summary{args.tag}.json", json.dumps(rows, indent=1))
    if args.json:
        info = {
            "benchmark": "method_knn",
            "scale": args.scale,
            "extra": extra,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": "python benchmarks/diagnostics/method_knn.py " + " ".join(sys.argv[1:]),
            "rows": rows,
        }
        atomic_write_text(args.json, json.dumps(info, indent=1) + "\n")

    def num(v):
        return "–" if v is None else f"{v:.2f}"

    lin = " linear top-1 trained | linear top-1 random init |" if args.linear else ""
    print(f"\n| method | kNN top-1 trained | kNN top-1 random init |{lin} images/s | pretrain wall s |")
    print("|---" * (6 if args.linear else 4) + "|---|")
    for r in rows:
        lin = f" {num(r['linear_trained'])} | {num(r['linear_random_init'])} |" if args.linear else ""
        print(
            f"| {r['method']} | {num(r['knn_trained'])} | {num(r['knn_random_init'])} |{lin} {r['images_per_s']:.0f} | {r['pretrain_wall_s']:.0f} |"
        )


if __name__ == "__main__":
    main()
