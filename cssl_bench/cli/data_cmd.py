"""``cssl-bench data ...``: dataset utilities."""
from __future__ import annotations

from pathlib import Path

import typer

from cssl_bench import UserError
from cssl_bench.cli.app import app, err

data_app = typer.Typer(help="Dataset utilities: export the embedded dataset, list datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("export")
def export(name: str = typer.Argument(..., help="embedded | embedded-color"), out: Path = typer.Argument(..., help="output folder"),
           size: int = typer.Option(32, help="image size (32 or 64)"), train: int = typer.Option(10000, help="training images"),
           test: int = typer.Option(2000, help="test images"), seed: int = typer.Option(0, help="generator seed")):
    """Write the embedded dataset as an image folder (train/ and test/ with class sub-folders of PNGs)."""
    from cssl_bench.data import embedded

    tasks = {"embedded": "label", "embedded-color": "color"}
    if name not in tasks:
        raise UserError(f"unknown exportable dataset {name!r}; choose from {', '.join(tasks)}", exit_code=2)
    n = embedded.export_imagefolder(embedded.EmbeddedSpec(size, train, test, seed), out, tasks[name])
    err.print(f"wrote {n} images")
    print(out)
