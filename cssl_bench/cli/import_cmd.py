"""``cssl-bench import CKPT --arch ARCH``: a backbone trained elsewhere as a run directory (docs/importing.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from cssl_bench.cli.app import app, err


@app.command("import")
def import_checkpoint(
    checkpoint: Path = typer.Argument(..., help="checkpoint file (.pth, .pth.tar, .ckpt, .pt, .safetensors)"),
    arch: str = typer.Option(
        ..., "--arch", help="backbone: resnet50, resnet18, resnet18-w0.25, ... or a timm model name (timm:NAME)"
    ),
    fmt: str = typer.Option(
        "auto",
        "--format",
        help="auto | moco | simsiam | swav | byol | dino | torchvision | timm | lightly | solo-learn",
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", help="run directory to write (default: runs/imported-FORMAT-ARCH-SCALE-SHA)"
    ),
    scale: str = typer.Option(
        "paper", help="tiny | small | paper: the evaluation datasets and image size probes of the run use"
    ),
    epochs: Optional[int] = typer.Option(
        None, help="pretraining epochs of the checkpoint, if known (records say null otherwise)"
    ),
    key: Optional[str] = typer.Option(
        None, "--key", help="entry holding the state dict, '/'-separated (e.g. student, state_dict); default: found"
    ),
    allow_extra: bool = typer.Option(
        False, "--allow-extra", help="import even when keys belong to no known part (run.json lists them)"
    ),
    pretrain_dataset: Optional[str] = typer.Option(
        None, "--pretrain-dataset", help="what the checkpoint was pretrained on, for the records (default: unknown)"
    ),
    dataset: Optional[str] = typer.Option(None, help="the run's default evaluation dataset (default: the scale's)"),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="evaluation image size (default: the scale's)"),
    sets: list[str] = typer.Option([], "--set", help="recipe override, section.key=value (e.g. data.workers=0)"),
    as_json: bool = typer.Option(False, "--json", help="print the import report as JSON"),
):
    """Write a run directory from a checkpoint trained elsewhere; every probe, evaluate, transfer and export accept it.

    Prints the run directory. Refused with one line: a file that would run code to load, a damaged file, keys
    that do not cover the --arch backbone, or keys of no known part (unless --allow-extra).
    """
    from cssl_bench.pipeline.importing import import_checkpoint as run_import

    r = run_import(
        checkpoint,
        fmt,
        arch,
        out,
        scale,
        epochs,
        key,
        allow_extra,
        dataset,
        image_size,
        pretrain_dataset,
        list(sets),
    )
    rep = r.report
    if as_json:
        print(
            json.dumps({"run_dir": str(r.run_dir), "source": r.source, "import": rep, "already": r.already}, indent=2)
        )
        return
    known = ", ".join(f"{k} ({n})" for k, n in rep["known_parts"].items()) or "none"
    where = f" from {rep['container']}" if rep["container"] else ""
    err.print(
        f"{r.source['format']}{' (detected)' if rep['detected'] else ''}{where}: {rep['mapped']} of "
        f"{rep['backbone_tensors']} backbone tensors mapped; known parts left out: {known}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    for what, label in (("filled", "set to 0 (absent from the file)"), ("extra", "ignored (--allow-extra)")):
        if rep[what]:
            err.print(
                f"note: {len(rep[what])} {label}: {', '.join(rep[what][:6])}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
    if r.already:
        err.print(
            "note: this import already exists there; nothing was written", markup=False, highlight=False, soft_wrap=True
        )
    print(r.run_dir)
