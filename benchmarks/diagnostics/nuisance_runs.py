"""What do finished runs' features encode? kNN on each attribute of the embedded images, per run.

The nuisance probe of ``benchmarks/learning.py --nuisance`` (kNN, k 200, t 0.1, train split -> test split, on the
class and on each generator attribute: position, scale, tilt, lighting, background level and setting, object
colour, sub-category) applied to run directories that already exist, through any feature (``--feature concat``:
LooC++'s read-out). Uses the runs' cached features where the probes made them; trains nothing.

    python benchmarks/diagnostics/nuisance_runs.py RUN [RUN ...] --feature concat \\
        --json benchmarks/results/diagnostics/nuisance_heads-small.json

Prints one line per run and writes JSON with the command and the date.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: learning.py's probe

from learning import nuisance_knn  # noqa: E402

from cssl_bench.eval.features import load_run  # noqa: E402
from cssl_bench.eval.probes import probe_knn  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="finished run directories (embedded pretraining)")
    ap.add_argument("--feature", default="backbone", help="backbone (default) | concat | head:N ...")
    ap.add_argument("--json", type=Path, help="write the rows here")
    a = ap.parse_args(argv)
    rows = []
    for rd in a.runs:
        run = load_run(rd)
        knn = next(r["value"] for r in probe_knn(run, "embedded", feature=a.feature) if r["metric"] == "knn/top1")
        row = {
            "run": rd.name,
            "method": run.recipe.method,
            "augment": list(run.recipe.augment.looc_augment or []),
            "heads": run.recipe.augment.variance_heads if run.recipe.augment.looc_augment else [],
            "seed": run.recipe.train.seed,
            "feature": a.feature,
            "class": knn,
            **nuisance_knn(run, "embedded", a.feature),
        }
        rows.append(row)
        shown = ", ".join(f"{k} {v:.1f}" for k, v in row.items() if isinstance(v, float) and "/chance" not in k)
        print(f"{rd.name}: {shown}", flush=True)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "command": "python benchmarks/diagnostics/nuisance_runs.py "
            + " ".join(map(str, argv if argv is not None else sys.argv[1:])),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "rows": rows,
        }
        a.json.write_text(json.dumps(payload, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
