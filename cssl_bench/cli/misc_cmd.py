"""``cssl-bench info`` and ``cssl-bench demo``."""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from cssl_bench.cli.app import app, console, err


@app.command()
def info():
    """Versions, thread settings, whether ffcv imports, and the accelerator."""
    import torch
    import torchvision

    from cssl_bench import __version__

    t = Table(title="cssl-bench info", show_header=False)
    t.add_row("cssl-bench", __version__)
    t.add_row("python", platform.python_version())
    t.add_row("torch", torch.__version__)
    t.add_row("torchvision", torchvision.__version__)
    for mod in ("timm", "ffcv", "lightly", "pycocotools", "imagecorruptions", "sklearn"):
        try:
            m = __import__(mod)
            t.add_row(mod, getattr(m, "__version__", "installed"))
        except Exception as e:  # noqa: BLE001
            t.add_row(mod, f"not available ({type(e).__name__})")
    t.add_row("torch threads", str(torch.get_num_threads()))
    t.add_row("OMP_WAIT_POLICY", os.environ.get("OMP_WAIT_POLICY", "(unset)"))
    t.add_row("cpu cores", str(os.cpu_count()))
    if torch.cuda.is_available():
        t.add_row("accelerator", f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}")
    else:
        t.add_row("accelerator", "none (CPU only: fp32)")
    console.print(t)


@app.command()
def demo(results: Optional[Path] = typer.Option(None, "--results", help="results store folder (default: OUT/results, so a demo never mixes into another store)"),
         out: Path = typer.Option(Path("runs/demo"), help="folder for the demo's runs"),
         epochs: Optional[int] = typer.Option(None, help="pretraining epochs per method (default: each tiny recipe's: SimCLR 4, MoCo v2 2)")):
    """The main job at tiny scale: SimCLR and (symmetrised) MoCo v2 on the embedded dataset -> kNN + linear -> methods table."""
    from cssl_bench.config import load_recipe
    from cssl_bench.eval.features import load_run
    from cssl_bench.eval.linear import get_protocol
    from cssl_bench.eval.probes import probe_knn, probe_linear
    from cssl_bench.results import tables
    from cssl_bench.results.reproduce import run_spec
    from cssl_bench.results.store import ResultsStore
    from cssl_bench.train.loop import pretrain, warn_if_collapsed

    results = results or out / "results"
    st = ResultsStore(results)
    summary = Table(title="demo: kNN top-1 on the embedded test split")
    summary.add_column("run")
    summary.add_column("epochs", justify="right")
    summary.add_column("kNN top-1", justify="right")
    summary.add_column("vs random init", justify="right")
    baseline = load_recipe("moco-v2", "tiny", {"train": {"epochs": 0}})
    runs = [("random init", baseline)]
    # the runs of SimSiam Table 4's rows (the catalogue's recipes: its MoCo v2 uses the symmetrised loss)
    for key in ("simclr", "moco-v2-sym"):
        spec = run_spec(key, "tiny")
        n = epochs if epochs is not None else load_recipe(spec.method, "tiny", sets=list(spec.sets)).train.epochs
        budgets = sorted(e for e in tables.EPOCH_BUDGETS["tiny"].values() if e <= n)
        runs.append((spec.method, load_recipe(spec.method, "tiny", {"train": {"epochs": n, "save_epochs": budgets}}, list(spec.sets))))
    init_knn = None
    for label, recipe in runs:
        run_dir = out / f"{recipe.method}-e{recipe.train.epochs}-{recipe.hash()}"
        if not (run_dir / "run.json").exists() or '"complete"' not in (run_dir / "run.json").read_text():
            err.print(f"[bold]pretrain {label}[/] -> {run_dir}")
            pretrain(recipe, run_dir, resume=(run_dir / "config.yaml").exists(), console=err)
        warn_if_collapsed(run_dir, err)
        for e in (recipe.train.save_epochs if recipe.train.epochs else [None]):  # the budgets kept above
            run = load_run(run_dir, e if e != recipe.train.epochs else None)
            knn = probe_knn(run, "embedded")
            top1 = next(r["value"] for r in knn if r["metric"] == "knn/top1")
            init_knn = top1 if init_knn is None else init_knn
            summary.add_row(label, str(run.epoch), f"{top1:.1f}", "" if label == "random init" else f"{top1 - init_knn:+.1f}")
            if recipe.train.epochs:
                lin, _ = probe_linear(run, "embedded", get_protocol("moco").with_overrides(augment=False))
                st.append(knn + lin)
    console.print(summary)
    rendered = tables.build("methods", st.read(), "tiny")
    console.print(tables.render(rendered, "md"), markup=False)
