"""``cssl-bench pretrain`` and ``cssl-bench methods``."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from cssl_bench.cli.app import app, console, err


def default_run_dir(method: str, scale: str, config_hash: str, seed: int) -> Path:
    return Path("runs") / f"{method.replace('+', 'p')}-{scale}-{config_hash}-s{seed}"


def build_recipe(method: str, scale: str, dataset: Optional[str], epochs: Optional[int], batch_size: Optional[int],
                 backbone: Optional[str], seed: Optional[int], lr: Optional[float], image_size: Optional[int],
                 workers: Optional[int], augment: Optional[str], precision: Optional[str], save_epochs: Optional[str], sets: List[str]):
    from cssl_bench.config import load_recipe
    from cssl_bench.data.datasets import check_dataset_name

    ov: dict = {}

    def put(sec, key, val):
        if val is not None:
            ov.setdefault(sec, {})[key] = val

    if dataset is not None:
        check_dataset_name(dataset)
    put("data", "dataset", dataset)
    put("data", "image_size", image_size)
    put("data", "workers", workers)
    put("train", "epochs", epochs)
    put("train", "batch_size", batch_size)
    put("train", "seed", seed)
    put("train", "precision", precision)
    put("model", "backbone", backbone)
    put("optim", "base_lr", lr)
    if augment is not None:
        put("augment", "looc_augment", [a.strip() for a in augment.split(",") if a.strip()])
    if save_epochs:
        put("train", "save_epochs", [int(x) for x in save_epochs.split(",")])
    return load_recipe(method, scale, ov, sets)


@app.command()
def pretrain(
    method: str = typer.Argument(..., help="method name: see 'cssl-bench methods'"),
    dataset: Optional[str] = typer.Option(None, help="dataset name or imagefolder:PATH (default: the scale's, 'embedded' at tiny/small)"),
    scale: str = typer.Option("tiny", help="tiny | small | paper"),
    epochs: Optional[int] = typer.Option(None, help="pretraining epochs (0 writes the initialised model: the random-init baseline)"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="batch size per process"),
    backbone: Optional[str] = typer.Option(None, help="resnet18, resnet50, resnet18-w0.25, or a timm model name"),
    seed: Optional[int] = typer.Option(None, help="random seed"),
    lr: Optional[float] = typer.Option(None, help="base learning rate (scaled by batch/256 when the recipe says so)"),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="training crop size in pixels"),
    workers: Optional[int] = typer.Option(None, help="data-loading worker processes"),
    augment: Optional[str] = typer.Option(None, help="LooC atomic augmentations, comma-separated: color,rotation,texture"),
    precision: Optional[str] = typer.Option(None, help="fp32 | bf16 | fp16"),
    save_epochs: Optional[str] = typer.Option(None, "--save-epochs", help="comma-separated epochs whose checkpoints are kept (epoch budgets)"),
    sets: List[str] = typer.Option([], "--set", help="recipe override section.key=value, repeatable (e.g. --set optim.weight_decay=1e-5)"),
    out: Optional[Path] = typer.Option(None, help="run directory (default: runs/METHOD-SCALE-HASH-sSEED)"),
    resume: bool = typer.Option(False, help="continue the run in --out from its last checkpoint"),
    quiet: bool = typer.Option(False, help="no progress bar"),
):
    """Pretrain one method (its recipe at --scale, plus overrides); prints the run directory."""
    from cssl_bench.train.loop import pretrain as run

    recipe = build_recipe(method, scale, dataset, epochs, batch_size, backbone, seed, lr, image_size, workers, augment,
                          precision, save_epochs, sets)
    out = out or default_run_dir(method, scale, recipe.hash(), recipe.train.seed)
    if not resume and (out / "checkpoints" / "last.pt").exists() and _complete(out, recipe):
        err.print(f"[green]already complete[/]: {out}")
        print(out)
        return
    run(recipe, out, resume=resume, show_progress=not quiet, console=err)
    print(out)


def _complete(out: Path, recipe) -> bool:
    import json

    try:
        info = json.loads((out / "run.json").read_text())
    except (OSError, ValueError):
        return False
    return info.get("status") == "complete" and info.get("config_hash") == recipe.hash()


@app.command()
def methods():
    """List the methods with a one-line description and their paper."""
    from cssl_bench.config import _load_yaml, available_methods

    t = Table(title="methods")
    t.add_column("name")
    t.add_column("description")
    t.add_column("paper")
    for m in available_methods():
        y = _load_yaml(m)
        t.add_row(m, y.get("description", ""), y.get("paper", ""))
    console.print(t)
