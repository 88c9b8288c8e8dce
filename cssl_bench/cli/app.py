"""The Typer application and helpers shared by the command modules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="cssl-bench",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Contrastive and siamese self-supervised learning benchmark: pretrain, probe, and render the SimSiam and LooC paper tables.",
)
console = Console()
err = Console(stderr=True)

ResultsOpt = typer.Option(
    None, "--results", help="results store folder (default: $CSSL_BENCH_RESULTS or ./runs/results)"
)
JsonOpt = typer.Option(False, "--json", help="print the records as a JSON list instead of a table")


# Exit status of "the results folder cannot be written": 1, as the store's own write error (an environment
# problem, not a bad option; tests/test_bad_inputs.py expects 1).
UNWRITABLE_EXIT = 1


def store(results: Optional[Path], writable: bool = False):
    """The results store; ``writable``: first check that records can be appended there (creating the folder),
    so a command fails before its work rather than after it."""
    from cssl_bench.results.store import ResultsStore

    st = ResultsStore(results)
    if writable:
        check_writable(st)
    return st


def check_writable(st) -> None:
    import os

    from cssl_bench import UserError
    from cssl_bench.train.checkpoint import check_writable_dir

    root = st.root
    try:
        if root.exists() and not root.is_dir():
            raise UserError(
                f"cannot write to the results directory {root}: it is a file, not a folder; nothing was run",
                exit_code=UNWRITABLE_EXIT,
            )
        check_writable_dir(root)
        for p in (st.path, Path(str(st.path) + ".lock")):
            if p.exists():  # appending to the records and taking the lock open these for writing
                os.close(os.open(p, os.O_WRONLY | os.O_APPEND))
    except PermissionError:
        raise UserError(
            f"cannot write to the results directory {root} (permission denied); nothing was run",
            exit_code=UNWRITABLE_EXIT,
        ) from None
    except OSError as e:
        raise UserError(
            f"cannot write to the results directory {root} ({e.strerror or e}); nothing was run",
            exit_code=UNWRITABLE_EXIT,
        ) from None


def print_records(records: list[dict], as_json: bool, title: str = "results") -> None:
    if as_json:
        print(json.dumps(records, indent=2))
        return
    t = Table(title=title)
    for col in ("method", "dataset", "epochs", "feature", "metric", "value"):
        t.add_column(col, justify="right" if col in ("epochs", "value") else "left")
    for r in records:
        t.add_row(
            r["method"],
            r["dataset"],
            "unknown" if r.get("epochs") is None else str(r["epochs"]),  # an imported checkpoint without --epochs
            str(r.get("feature", "")),
            r["metric"],
            f"{r['value']:.2f}" + (f" (±{r['ci95']:.2f})" if r.get("ci95") is not None else ""),
        )
    console.print(t)
