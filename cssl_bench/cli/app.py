"""The Typer application and helpers shared by the command modules."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(name="cssl-bench", add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Contrastive and siamese self-supervised learning benchmark: pretrain, probe, and render the SimSiam and LooC paper tables.")
console = Console()
err = Console(stderr=True)

ResultsOpt = typer.Option(None, "--results", help="results store folder (default: $CSSL_BENCH_RESULTS or ./runs/results)")
JsonOpt = typer.Option(False, "--json", help="print the records as a JSON list instead of a table")


def store(results: Optional[Path]):
    from cssl_bench.results.store import ResultsStore

    return ResultsStore(results)


def print_records(records: list[dict], as_json: bool, title: str = "results") -> None:
    if as_json:
        print(json.dumps(records, indent=2))
        return
    t = Table(title=title)
    for col in ("method", "dataset", "epochs", "feature", "metric", "value"):
        t.add_column(col, justify="right" if col in ("epochs", "value") else "left")
    for r in records:
        t.add_row(r["method"], r["dataset"], str(r["epochs"]), str(r.get("feature", "")), r["metric"], f"{r['value']:.2f}" + (f" (±{r['ci95']:.2f})" if r.get("ci95") is not None else ""))
    console.print(t)
