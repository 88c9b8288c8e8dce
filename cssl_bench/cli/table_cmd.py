"""``cssl-bench table NAME``: render a paper table from the results store."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from cssl_bench.cli.app import ResultsOpt, app, console, store
from cssl_bench import UserError


@app.command()
def table(name: Optional[str] = typer.Argument(None, help="table name or alias (see --list)"),
          results: Optional[Path] = ResultsOpt,
          fmt: str = typer.Option("md", "--format", help="md | csv | json"),
          compare: Optional[str] = typer.Option(None, "--compare", help="'paper': paper | ours | delta per cell"),
          scale: Optional[str] = typer.Option(None, help="which scale's records (default: the newest record's)"),
          list_: bool = typer.Option(False, "--list", help="list the tables with their captions")):
    """Render a paper table in its own layout, our numbers beside the paper's."""
    from cssl_bench.results import tables

    if list_ or name is None:
        t = Table(title="tables")
        for col in ("name", "aliases", "caption"):
            t.add_column(col)
        for spec in tables.TABLES.values():
            t.add_row(spec.name, ", ".join(spec.aliases), spec.caption)
        console.print(t)
        return
    if fmt not in ("md", "csv", "json"):
        raise UserError(f"unknown format {fmt!r}; choose from md, csv, json", exit_code=2)
    if compare not in (None, "paper"):
        raise UserError(f"unknown --compare {compare!r}; the only choice is 'paper'", exit_code=2)
    if scale is not None and scale not in ("tiny", "small", "paper"):
        raise UserError(f"unknown scale {scale!r}; choose from tiny, small, paper", exit_code=2)
    rendered = tables.build(name, store(results).read(), scale)
    print(tables.render(rendered, fmt, compare == "paper"), end="")
