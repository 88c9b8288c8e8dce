"""Which corruptions separate the rows of LooC Table 3 (or 5)? Per-corruption top-1 behind each row's ``All`` cell.

For each row of the robustness table (``--table heads``: LooC Table 5), the records the table itself selects for its All cell and the
per-corruption records of the same probes (``cssl_bench.results.breakdown``): for every seed the mean over the
severities it has, then the mean and sample std across seeds. The clean top-1 of the row (its IN-100 cell) is printed beside them, so a reader sees whether a row loses
everywhere (its clean accuracy) or on some corruptions. Reads a results store; trains and probes nothing.

    python benchmarks/diagnostics/corruption_breakdown.py --results results --scale small \\
        --json benchmarks/results/diagnostics/corruption_breakdown-small.json
    python benchmarks/diagnostics/corruption_breakdown.py --results results --scale small --table heads \\
        --json benchmarks/results/diagnostics/corruption_breakdown-heads-small.json

``--by-config`` groups every corruption probe of the store by run configuration instead (method, augmentations,
heads, feature; seeds pooled), for probes that fill no table cell, such as a diagnostics store made with
``cssl-bench probe corruption RUN --limit 1000 --results STORE`` on LooC Table 2's runs.

Prints a markdown table (one line per row: clean top-1, then each corruption in group order) and writes the
numbers as JSON with the command and the date.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: cssl_bench without installing

from cssl_bench.data.corruptions import GROUPS  # noqa: E402
from cssl_bench.results.breakdown import ALL_COLUMNS, corruption_breakdown, corruption_by_config  # noqa: E402
from cssl_bench.results.store import ResultsStore  # noqa: E402
from cssl_bench.train.checkpoint import atomic_write_text  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=Path("results"), help="the results store (default: results)")
    ap.add_argument("--scale", default="small")
    ap.add_argument("--table", default="robustness", choices=sorted(ALL_COLUMNS), help="default: robustness")
    ap.add_argument("--by-config", action="store_true", help="group by run configuration, not by table row")
    ap.add_argument("--json", type=Path, help="write the rows here")
    a = ap.parse_args(argv)
    records = ResultsStore(a.results).read()
    if a.by_config:
        rows = [{"row": r["config"], "clean": None, **r} for r in corruption_by_config(records)]
    else:
        rows = corruption_breakdown(records, a.scale, a.table)
    if not rows:
        print(f"no {a.table} row has an All value at {a.scale} scale in {a.results}", file=sys.stderr)
        return 1
    names = [c for g in GROUPS.values() for c in g]
    print("| row | seeds | clean | All | " + " | ".join(names) + " |")
    print("|---|---|---|---|" + "---|" * len(names))
    for r in rows:
        cells = [r["clean"], r["all"]] + [r["corruptions"].get(c) for c in names]
        shown = [
            f"{x['mean']:.1f}" + (f" ± {x['std']:.1f}" if x["std"] is not None else "") if x else "–" for x in cells
        ]
        print(f"| {r['row']} | {len(r['seeds'])} | " + " | ".join(shown) + " |")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "benchmark": "corruption_breakdown",
            "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "scale": a.scale,
            "table": None if a.by_config else a.table,
            "by_config": a.by_config,
            "results": str(a.results),
            "groups": GROUPS,
            "rows": rows,
        }
        atomic_write_text(a.json, json.dumps(payload, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
