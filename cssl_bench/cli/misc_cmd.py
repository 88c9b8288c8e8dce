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
        t.add_row("accelerator", "none (CPU only)")
    from cssl_bench import UserError
    from cssl_bench.precision import explain_auto

    try:  # what train.precision auto (the tiny and small scales' default) resolves to on this machine
        resolved, why = explain_auto()
        t.add_row("bf16 autocast", f"precision auto -> {resolved} ({why})")
    except UserError as e:  # a bad CSSL_BENCH_CPU_BF16
        t.add_row("bf16 autocast", f"unknown: {e}")
    console.print(t)


@app.command()
def demo(
    results: Optional[Path] = typer.Option(
        None, "--results", help="results store folder (default: OUT/results, so a demo never mixes into another store)"
    ),
    out: Path = typer.Option(Path("runs/demo"), help="folder for the demo's runs"),
    epochs: Optional[int] = typer.Option(
        None, help="pretraining epochs per method (default: each tiny recipe's: 4 for SimCLR and MoCo v2)"
    ),
    seeds: int = typer.Option(
        1, help="pretrain every run (the baseline too) under seeds 0..N-1; the summary shows mean ± std over them"
    ),
    sets: list[str] = typer.Option(
        [],
        "--set",
        help="recipe override for every run, section.key=value (e.g. data.embedded_train=512 for a quick look)",
    ),
):
    """The main job at tiny scale: SimCLR and (symmetrised) MoCo v2 on the embedded dataset -> kNN + linear -> methods table.

    The summary compares each checkpoint's kNN top-1 with two random-init baselines (an epoch-0 MoCo v2 run):
    as initialised (BN statistics of initialisation) and with its BN statistics re-estimated on the training
    images (``eval.baseline``); "vs random init" is against the higher of the two. With ``--seeds N`` each row
    is the mean ± sample std over seeds 0..N-1, its per-seed values in the caption.
    """
    from cssl_bench.config import load_recipe
    from cssl_bench.eval.baseline import reestimate_bn
    from cssl_bench.eval.features import load_run
    from cssl_bench.eval.linear import get_protocol
    from cssl_bench.eval.probes import probe_knn, probe_linear
    from cssl_bench.pipeline.reproduce import run_spec
    from cssl_bench.results import tables
    from cssl_bench.results.store import ResultsStore
    from cssl_bench.train.checkpoint import run_complete
    from cssl_bench.train.loop import pretrain, warn_if_collapsed

    tables.check_seeds(seeds)  # before any work (exit 2)
    results = results or out / "results"
    st = ResultsStore(results)
    runs = []
    for seed in range(seeds):
        runs.append(("random init", load_recipe("moco-v2", "tiny", {"train": {"epochs": 0, "seed": seed}}, list(sets))))
        # the runs of SimSiam Table 4's rows (the catalogue's recipes: its MoCo v2 uses the symmetrised loss)
        for key in ("simclr", "moco-v2-sym"):
            spec = run_spec(key, "tiny")
            n = (
                epochs
                if epochs is not None
                else load_recipe(spec.method, "tiny", sets=list(spec.sets) + list(sets)).train.epochs
            )
            budgets = sorted(e for e in tables.EPOCH_BUDGETS["tiny"].values() if e <= n)
            ov = {"train": {"epochs": n, "save_epochs": budgets, "seed": seed}}
            runs.append((spec.method, load_recipe(spec.method, "tiny", ov, list(spec.sets) + list(sets))))
    made: list[dict] = []  # this demo's kNN records: the summary's rows
    protocol = get_protocol("moco").with_overrides(augment=False)  # every linear probe of the demo
    for label, recipe in runs:
        run_dir = out / f"{recipe.method}-e{recipe.train.epochs}-{recipe.hash()}"
        if not run_complete(run_dir, recipe):
            err.print(f"[bold]pretrain {label} (seed {recipe.train.seed})[/] -> {run_dir}")
            pretrain(recipe, run_dir, resume=(run_dir / "config.yaml").exists(), console=err)
        warn_if_collapsed(run_dir, err)
        if not recipe.train.epochs:  # the random-init baselines: as initialised, and with BN statistics of the data
            knn, lin = [], []
            run = load_run(run_dir)
            for r in (run, reestimate_bn(run, "embedded")):
                knn += probe_knn(r, "embedded")
                lin += probe_linear(r, "embedded", protocol)[0]
            made += knn
            st.append(knn + lin)  # the linear ones: the methods table's caption states the higher baseline
            continue
        for e in sorted(set(recipe.train.save_epochs) | {recipe.train.epochs}):  # the budgets kept above, and the last
            run = load_run(run_dir, e if e != recipe.train.epochs else None)
            knn = probe_knn(run, "embedded")
            lin, _ = probe_linear(run, "embedded", protocol)
            made += knn
            st.append(knn + lin)
    rows, caption = tables.baseline_summary(made, "knn/top1", "embedded")
    over = f" (mean ± std over seeds 0-{seeds - 1})" if seeds > 1 else ""
    summary = Table(title=f"demo: kNN top-1 on the embedded test split{over}")
    summary.add_column("run")
    summary.add_column("epochs", justify="right")
    summary.add_column("kNN top-1", justify="right")
    summary.add_column("vs random init", justify="right")
    for row in rows:
        summary.add_row(row["label"], str(row["epochs"]), row["text"], row["delta"])
    console.print(summary)
    console.print(caption, markup=False, highlight=False)
    rendered = tables.build("methods", st.read(), "tiny", seeds)
    console.print(tables.render(rendered, "md"), markup=False)
