"""The command line that the run diagnostics share (moco_shortcut.py, swav_span.py, instance_acc.py):
``RUN [RUN ...] [--batch N] [--json OUT.json]``, one measurement per run, a markdown table on stdout and, with
``--json``, the rows with the command and the date."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: cssl_bench without installing

from cssl_bench.train.checkpoint import atomic_write_text  # noqa: E402


def report(
    benchmark: str, rows: list[dict], cols: list[str], size: int, json_path: Path | None, size_name: str = "batch"
) -> None:
    """Print ``rows`` as a markdown table (run folder name + ``cols``) and, with ``json_path``, write them with the
    command and date."""
    print("| run | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for r in rows:
        print(
            f"| {Path(r['run']).name} | "
            + " | ".join(f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c]) for c in cols)
            + " |"
        )
    if json_path:
        info = {
            "benchmark": benchmark,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": f"python benchmarks/diagnostics/{benchmark}.py " + " ".join(sys.argv[1:]),
            size_name: size,
            "rows": rows,
        }
        atomic_write_text(json_path, json.dumps(info, indent=1) + "\n")


def cli_main(
    benchmark: str, doc: str, measure_run, cols: list[str], size_flag: str = "--batch", default: int = 128
) -> int:
    """Parse ``RUN [RUN ...] [SIZE_FLAG N] [--json OUT]``, call ``measure_run(run, N)`` per run, report; returns N.
    A refused run (``cssl_bench.UserError``) prints one ``error:`` line and exits with its code."""
    from cssl_bench import UserError

    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument(size_flag, dest="size", type=int, default=default)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    try:
        rows = [measure_run(r, args.size) for r in args.runs]
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None
    report(benchmark, rows, cols, args.size, args.json, size_flag.lstrip("-"))
    return args.size
