"""How much of a recipe's seed spread is the linear probe's own? The same frozen features, several probe seeds.

For each run directory: the project's linear probe (``moco`` protocol on cached features, no augmentation:
what ``benchmarks/learning.py`` reports) trained under probe seeds 0..N-1 on the embedded train split, top-1
on its test split. A probe std far below the spread between pretraining seeds says the spread is the
pretraining's (different trajectories give different features), not the probe's initialisation or batch order.

    python benchmarks/diagnostics/probe_noise.py RUN [RUN ...] --seeds 5 \
        --json benchmarks/results/diagnostics/probe_noise-small.json

Prints one line per run (values, mean, sample std) and writes JSON with the command and the machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from cssl_bench.eval.features import load_run  # noqa: E402
from cssl_bench.eval.linear import get_protocol  # noqa: E402
from cssl_bench.eval.probes import probe_linear  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="finished run directories")
    ap.add_argument("--seeds", type=int, default=5, help="probe seeds 0..N-1 (default 5)")
    ap.add_argument("--json", type=Path, help="write the rows here")
    a = ap.parse_args(argv)
    rows = []
    for rd in a.runs:
        run = load_run(rd)
        vals = []
        for s in range(a.seeds):
            recs, _ = probe_linear(run, "embedded", get_protocol("moco").with_overrides(augment=False, seed=s))
            vals.append(next(r["value"] for r in recs if r["metric"] == "linear/top1"))
        row = {
            "run": rd.name,
            "method": run.recipe.method,
            "pretrain_seed": run.recipe.train.seed,
            "probe_seeds": list(range(a.seeds)),
            "linear_top1": vals,
            "mean": round(statistics.mean(vals), 2),
            "std": round(statistics.stdev(vals), 2) if len(vals) > 1 else None,
        }
        rows.append(row)
        print(
            f"{rd.name} (pretrain seed {row['pretrain_seed']}): {vals} mean {row['mean']} std {row['std']}", flush=True
        )
    if a.json:
        out = {
            "command": "python benchmarks/diagnostics/probe_noise.py "
            + " ".join(argv if argv is not None else sys.argv[1:]),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": {
                "platform": platform.platform(),
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
            },
            "protocol": "moco linear protocol, no augmentation, embedded train -> test",
            "rows": rows,
        }
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
