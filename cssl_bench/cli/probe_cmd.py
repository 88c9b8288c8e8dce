"""``cssl-bench probe knn|linear RUN_DIR``: evaluations on a finished run; records go to the results store."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cssl_bench.cli.app import JsonOpt, ResultsOpt, app, print_records, store

probe_app = typer.Typer(help="Evaluate a run's frozen features; each probe appends records to the results store.", no_args_is_help=True)
app.add_typer(probe_app, name="probe")

DatasetOpt = typer.Option(None, help="evaluation dataset (default: the run's pretraining dataset)")
FeatureOpt = typer.Option(None, help="backbone | head:N | concat (LooC++); default: the run's downstream feature")
EpochOpt = typer.Option(None, help="probe the checkpoint kept at this epoch (see --save-epochs) instead of the last one")


def _load(run_dir: Path, epoch: Optional[int]):
    from cssl_bench.eval.features import load_run

    return load_run(run_dir, epoch)


@probe_app.command("knn")
def knn(run_dir: Path, dataset: Optional[str] = DatasetOpt, k: int = typer.Option(200, help="neighbours"),
        temperature: float = typer.Option(0.1, help="vote temperature"), feature: Optional[str] = FeatureOpt,
        epoch: Optional[int] = EpochOpt, results: Optional[Path] = ResultsOpt, as_json: bool = JsonOpt):
    """Weighted cosine kNN on frozen features (k and T are recorded)."""
    from cssl_bench.data.datasets import check_dataset_name
    from cssl_bench.eval.probes import probe_knn

    run = _load(run_dir, epoch)
    dataset = dataset or run.recipe.data.dataset
    check_dataset_name(dataset)
    recs = probe_knn(run, dataset, k, temperature, feature)
    store(results).append(recs)
    print_records(recs, as_json, "kNN")


@probe_app.command("linear")
def linear(run_dir: Path, dataset: Optional[str] = DatasetOpt,
           protocol: str = typer.Option("moco", help="moco | simsiam | looc"),
           epochs: Optional[int] = typer.Option(None, help="probe epochs (milestones scale along)"),
           batch_size: Optional[int] = typer.Option(None, "--batch-size", help="probe batch size"),
           lr: Optional[float] = typer.Option(None, help="probe learning rate"),
           augment: Optional[bool] = typer.Option(None, "--augment/--no-augment", help="train on augmented views (paper) or on cached features; default: off at tiny/small, on at paper scale"),
           feature_norm: Optional[str] = typer.Option(None, "--feature-norm", help="none | bn (standardise features)"),
           feature: Optional[str] = FeatureOpt, epoch: Optional[int] = EpochOpt,
           results: Optional[Path] = ResultsOpt, as_json: bool = JsonOpt):
    """Linear probe on frozen features with a named protocol; top-1 and top-5."""
    from cssl_bench.data.datasets import check_dataset_name
    from cssl_bench.eval.linear import get_protocol
    from cssl_bench.eval.probes import probe_linear

    p = get_protocol(protocol)
    run = _load(run_dir, epoch)
    dataset = dataset or run.recipe.data.dataset
    check_dataset_name(dataset)
    if augment is None:
        augment = run.recipe.scale == "paper"
    p = p.with_overrides(epochs=epochs, batch_size=batch_size, lr=lr, augment=augment, feature_norm=feature_norm)
    recs, _ = probe_linear(run, dataset, p, feature)
    store(results).append(recs)
    print_records(recs, as_json, f"linear ({protocol})")
