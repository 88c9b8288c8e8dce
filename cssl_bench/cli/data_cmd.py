"""``cssl-bench data ...``: dataset utilities."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cssl_bench import UserError
from cssl_bench.cli.app import app, err

data_app = typer.Typer(
    help="Dataset utilities: list datasets, convert one to an FFCV .beton, export the embedded dataset.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")


EXPORT_MARKER = (
    ".cssl-bench-export.json"  # what `data export` wrote into a folder: the only folder it writes into again
)
EXPORT_SIZES = (32, 64)


def _prepare_export_folder(out: Path, what: dict) -> None:
    """Make ``out`` ready for an export of ``what``, before any work. It must be a new or empty folder, or one that
    holds a previous export of exactly the same thing (whose files are rewritten, identical): export never deletes
    or mixes with other files."""
    import json

    marker = out / EXPORT_MARKER
    try:
        if out.exists() and not out.is_dir():
            raise UserError(f"output folder {out} is a file; give a new or empty folder", exit_code=2)
        if out.is_dir() and any(out.iterdir()):
            try:
                previous = json.loads(marker.read_text()) if marker.is_file() else None
            except ValueError:
                previous = None
            if previous != what:
                why = "a previous export of other options" if previous is not None else "other files"
                raise UserError(
                    f"output folder {out} is not empty (it holds {why}); give a new or empty folder, "
                    f"nothing was written",
                    exit_code=2,
                )
        out.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps(what, indent=1))
    except OSError as e:
        raise UserError(
            f"cannot write to the output folder {out} ({e.strerror or type(e).__name__})", exit_code=2
        ) from None


@data_app.command("export")
def export(
    name: str = typer.Argument(..., help="embedded | embedded-color"),
    out: Path = typer.Argument(
        ...,
        help="output folder: new or empty (or holding an export of the same options, which is "
        "rewritten); a folder with other files is refused, nothing in it is deleted",
    ),
    size: int = typer.Option(32, help="image size (32 or 64)"),
    train: int = typer.Option(10000, help="training images"),
    test: int = typer.Option(2000, help="test images"),
    seed: int = typer.Option(0, help="generator seed"),
):
    """Write the embedded dataset as an image folder (train/ and test/ with class sub-folders of PNGs).

    The folder must be new or empty; exporting again with the same options into the folder of an earlier export
    rewrites the same files. Export never deletes files."""
    from cssl_bench.data import embedded

    tasks = {"embedded": "label", "embedded-color": "color"}
    if name not in tasks:
        raise UserError(f"unknown exportable dataset {name!r}; choose from {', '.join(tasks)}", exit_code=2)
    if size not in EXPORT_SIZES:
        raise UserError(f"--size must be one of {', '.join(map(str, EXPORT_SIZES))}, got {size}", exit_code=2)
    if train < 1:
        raise UserError(f"--train must be >= 1, got {train}", exit_code=2)
    if test < 0:
        raise UserError(f"--test must be >= 0, got {test}", exit_code=2)
    spec = embedded.EmbeddedSpec(size, train, test, seed)
    _prepare_export_folder(
        out, {"dataset": name, "size": size, "train": train, "test": test, "seed": seed, "generator": spec.version}
    )
    try:
        n = embedded.export_imagefolder(spec, out, tasks[name])
    except OSError as e:  # disk full, or the dataset cache not writable
        raise UserError(f"cannot write {e.filename or out} ({e.strerror or type(e).__name__})") from None
    err.print(f"wrote {n} images")
    print(out)


@data_app.command("list")
def list_datasets(as_json: bool = typer.Option(False, "--json", help="print a JSON list instead of a table")):
    """Every named dataset: whether it was found, where it looks, what it stands for. Roots come from
    $CSSL_BENCH_DATA (default ~/datasets) or a per-dataset variable (see cssl_bench/data/named.py)."""
    import json as _json

    from rich.table import Table

    from cssl_bench.cli.app import console
    from cssl_bench.data.datasets import REGISTRY

    rows = []
    for name, info in REGISTRY.items():
        try:
            found, where = bool(info.found()), info.where()
        except Exception as e:  # a broken root must not hide the other datasets
            found, where = False, f"error: {e}"
        rows.append(
            {
                "name": name,
                "found": found,
                "where": where,
                "splits": list(info.splits),
                "description": info.description,
                "stand_in_for": info.stand_in_for,
            }
        )
    rows.append(
        {
            "name": "imagefolder:PATH",
            "found": None,
            "where": "PATH/CLASS/*.jpg (or PATH/train/ and PATH/test/; no class folders: one unlabelled class)",
            "splits": ["train", "test"],
            "description": "any folder of images",
            "stand_in_for": "",
        }
    )
    if as_json:
        print(_json.dumps(rows, indent=1))
        return
    t = Table(title="datasets")
    for col in ("name", "found", "where", "description"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(
            r["name"],
            {True: "yes", False: "no", None: "-"}[r["found"]],
            r["where"],
            r["description"] + (f" (stand-in for {r['stand_in_for']})" if r["stand_in_for"] else ""),
        )
    console.print(t)


@data_app.command("convert")
def convert(
    dataset: str = typer.Argument(..., help="dataset name (see `data list`) or imagefolder:PATH"),
    out: Optional[Path] = typer.Argument(
        None,
        help="output .beton (default: where the training loader finds it "
        "(recipe data.loader auto or ffcv): $CSSL_BENCH_FFCV_DIR or the cache's ffcv/ folder)",
    ),
    split: str = typer.Option("train", help="split to write"),
    quality: int = typer.Option(90, help="JPEG quality (1-100)"),
    max_side: Optional[int] = typer.Option(
        None, "--max-side", help="downscale so the longer side is at most this (pixels)"
    ),
    raw: bool = typer.Option(False, "--raw", help="store raw pixels instead of JPEG (exact, larger)"),
    skip_bad: bool = typer.Option(
        False, "--skip-bad", help="store unreadable images as black images instead of failing"
    ),
    workers: int = typer.Option(2, help="writer processes"),
    embedded_size: int = typer.Option(32, help="embedded datasets: image size"),
    embedded_train: int = typer.Option(10000, help="embedded datasets: training images"),
    embedded_test: int = typer.Option(2000, help="embedded datasets: test images"),
    embedded_seed: int = typer.Option(0, help="embedded datasets: generator seed"),
):
    """Write a dataset split as an FFCV .beton (needs `make ffcv`). Unreadable images are counted and
    reported; the training loader (`pretrain --set data.loader=auto|ffcv`) then reads it with the same views as torchvision."""
    from cssl_bench.data import ffcv_loader
    from cssl_bench.data.datasets import DatasetOptions, get_source

    if not ffcv_loader.ffcv_installed():
        raise UserError(f"ffcv is not installed; {ffcv_loader.INSTALL_HINT}")
    options = DatasetOptions(embedded_size, embedded_train, embedded_test, embedded_seed, skip_bad=False)
    source = get_source(dataset, split, options)
    target = out or ffcv_loader.default_beton_path(dataset, split, options)
    if target.suffix != ".beton":
        raise UserError(f"output {target} should end in .beton", exit_code=2)
    meta = ffcv_loader.write_beton(
        source,
        target,
        dataset=dataset,
        split=split,
        options=options,
        jpeg_quality=quality,
        max_side=max_side,
        raw=raw,
        skip_bad=skip_bad,
        workers=workers,
        progress=err.is_terminal,
    )
    if meta["bad"]:
        err.print(
            f"{len(meta['bad'])} unreadable image(s) stored as black images (listed in {ffcv_loader.sidecar_path(target)})"
        )
    size = target.stat().st_size
    err.print(f"wrote {meta['n']} images of {dataset}/{split} ({meta['write_mode']}, {size / 2**20:.1f} MiB)")
    print(target)
