"""``cssl-bench probe KIND RUN_DIR``: evaluations on a finished run; records go to the results store.

Kinds: knn, linear, rotation, fewshot, corruption, objectnet, finegrained (docs/protocols.md, section 2). Each
prints a table (``--json``: the records) and appends its records (docs/records.md). ``knn`` and ``linear``
take ``--bn-data``: the random-init baseline with BN statistics of the data (``eval.baseline``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cssl_bench.cli.app import JsonOpt, ResultsOpt, app, err, print_records, store

probe_app = typer.Typer(
    help="Evaluate a run's frozen features; each probe appends records to the results store.", no_args_is_help=True
)
app.add_typer(probe_app, name="probe")

RunDirArg = typer.Argument(..., help="a pretraining run directory")
DatasetOpt = typer.Option(None, help="evaluation dataset (default: the run's pretraining dataset)")
FeatureOpt = typer.Option(
    None,
    help="backbone | head:N | head:N:out | concat | concat:out | concat:hidden+v (LooC/LooC++); default: the run's downstream feature",
)
EpochOpt = typer.Option(
    None, help="probe the checkpoint kept at this epoch (see --save-epochs) instead of the last one"
)
ProtocolOpt = typer.Option("looc", help="linear protocol: moco | simsiam | looc")
EpochsOpt = typer.Option(None, help="linear-probe epochs (milestones scale along)")
BatchOpt = typer.Option(None, "--batch-size", help="linear-probe batch size")
LrOpt = typer.Option(None, help="linear-probe learning rate")
AugmentOpt = typer.Option(
    None,
    "--augment/--no-augment",
    help="train the probe on augmented views (paper) or on cached features; default: off at tiny/small, on at paper scale",
)
NormOpt = typer.Option(None, "--feature-norm", help="none | bn (standardise features)")
SeedOpt = typer.Option(0, help="seed of the probe's sampling (subsets, corruptions, few-shot draws)")
BnDataOpt = typer.Option(
    False,
    "--bn-data",
    help="probe a copy whose backbone BN running statistics are re-estimated on the "
    "dataset's training images (meant for the random-init baseline, an epoch-0 run; records get init_bn: data)",
)


def _start(results: Optional[Path]):
    """Before any work: bars on stderr when it is a terminal, and a results store that can be written."""
    from cssl_bench.eval import progress

    progress.enable(err)
    return store(results, writable=True)


def _check_protocol(protocol: str, epochs, batch_size, lr, feature_norm) -> None:
    """Unknown protocol names and out-of-range linear-probe options fail before the run is loaded (exit 2)."""
    from cssl_bench.eval.linear import get_protocol

    get_protocol(protocol).with_overrides(epochs=epochs, batch_size=batch_size, lr=lr, feature_norm=feature_norm)


def _check_limit(limit: Optional[int]) -> None:
    if limit is not None and limit < 1:
        from cssl_bench import UserError

        raise UserError(f"--limit must be an integer >= 1, got {limit}", exit_code=2)


def _load(run_dir: Path, epoch: Optional[int]):
    from cssl_bench.eval.features import load_run
    from cssl_bench.train.loop import warn_if_collapsed

    run = load_run(run_dir, epoch)
    warn_if_collapsed(run.run_dir, err, step=run.step, dim=run.method.embedding_dim)  # the probed checkpoint's z_std
    return run


def _bn_data(run, dataset: str, bn_data: bool):
    """The run as loaded, or (``--bn-data``) its copy with BN statistics re-estimated on ``dataset``'s train split."""
    if not bn_data:
        return run
    from cssl_bench.eval.baseline import reestimate_bn

    return reestimate_bn(run, dataset)


def _dataset(run, dataset: Optional[str], default: Optional[str] = None) -> str:
    from cssl_bench.data.datasets import check_dataset_name

    dataset = dataset or default or run.recipe.data.dataset
    check_dataset_name(dataset)
    return dataset


def _protocol(run, protocol: str, epochs, batch_size, lr, augment, feature_norm):
    """The named protocol as the run's scale probes it (``LinearProtocol.for_scale``), with the given options."""
    from cssl_bench.eval.linear import get_protocol

    return (
        get_protocol(protocol)
        .for_scale(run.recipe.scale)
        .with_overrides(epochs=epochs, batch_size=batch_size, lr=lr, augment=augment, feature_norm=feature_norm)
    )


def _check_feature(run, feature: Optional[str]) -> None:
    if feature is None:
        return
    kinds = run.method.feature_kinds()
    if feature not in kinds:
        from cssl_bench import UserError

        raise UserError(
            f"feature {feature!r} is not available for {run.recipe.method}; choose from {', '.join(kinds)}", exit_code=2
        )


def _role(role: str, run) -> str:
    from cssl_bench.eval.suite import dataset_for

    return dataset_for(role, run.recipe.scale)


def _finish(recs: list[dict], st, as_json: bool, title: str) -> None:
    st.append(recs)
    print_records(recs, as_json, title)


@probe_app.command("knn")
def knn(
    run_dir: Path = RunDirArg,
    dataset: Optional[str] = DatasetOpt,
    k: Optional[int] = typer.Option(None, help="neighbours (default: 20 for 100 classes or more, else 200)"),
    temperature: float = typer.Option(0.1, help="vote temperature"),
    feature: Optional[str] = FeatureOpt,
    epoch: Optional[int] = EpochOpt,
    bn_data: bool = BnDataOpt,
    results: Optional[Path] = ResultsOpt,
    as_json: bool = JsonOpt,
):
    """Weighted cosine kNN on frozen features (k and T are recorded)."""
    from cssl_bench.eval.knn import check_knn_options
    from cssl_bench.eval.probes import probe_knn

    check_knn_options(k, temperature)
    st = _start(results)
    run = _load(run_dir, epoch)
    dataset = _dataset(run, dataset)
    _check_feature(run, feature)
    run = _bn_data(run, dataset, bn_data)
    _finish(probe_knn(run, dataset, k, temperature, feature), st, as_json, "kNN")


@probe_app.command("linear")
def linear(
    run_dir: Path = RunDirArg,
    dataset: Optional[str] = DatasetOpt,
    protocol: str = typer.Option("moco", help="moco | simsiam | looc"),
    epochs: Optional[int] = EpochsOpt,
    batch_size: Optional[int] = BatchOpt,
    lr: Optional[float] = LrOpt,
    augment: Optional[bool] = AugmentOpt,
    feature_norm: Optional[str] = NormOpt,
    feature: Optional[str] = FeatureOpt,
    epoch: Optional[int] = EpochOpt,
    bn_data: bool = BnDataOpt,
    results: Optional[Path] = ResultsOpt,
    as_json: bool = JsonOpt,
):
    """Linear probe on frozen features with a named protocol; top-1 and top-5."""
    from cssl_bench.eval.probes import probe_linear

    _check_protocol(
        protocol, epochs, batch_size, lr, feature_norm
    )  # bad names and values fail before the run is loaded
    st = _start(results)
    run = _load(run_dir, epoch)
    dataset = _dataset(run, dataset)
    _check_feature(run, feature)
    p = _protocol(run, protocol, epochs, batch_size, lr, augment, feature_norm)
    run = _bn_data(run, dataset, bn_data)
    recs, _ = probe_linear(run, dataset, p, feature)
    _finish(recs, st, as_json, f"linear ({protocol})")


@probe_app.command("rotation")
def rotation(
    run_dir: Path = RunDirArg,
    dataset: Optional[str] = DatasetOpt,
    protocol: str = ProtocolOpt,
    epochs: Optional[int] = EpochsOpt,
    batch_size: Optional[int] = BatchOpt,
    lr: Optional[float] = LrOpt,
    feature_norm: Optional[str] = NormOpt,
    limit: Optional[int] = typer.Option(
        None, help="a seeded subset of this many train and test images (each appears at 4 angles)"
    ),
    seed: int = SeedOpt,
    feature: Optional[str] = FeatureOpt,
    epoch: Optional[int] = EpochOpt,
    results: Optional[Path] = ResultsOpt,
    as_json: bool = JsonOpt,
):
    """4-way rotation prediction (LooC Table 1): linear probe on rotated images' frozen features; rotation/acc."""
    from cssl_bench.eval.rotation import probe_rotation

    _check_protocol(protocol, epochs, batch_size, lr, feature_norm)
    _check_limit(limit)
    st = _start(results)
    run = _load(run_dir, epoch)
    dataset = _dataset(run, dataset)
    _check_feature(run, feature)
    p = _protocol(run, protocol, epochs, batch_size, lr, False, feature_norm)
    _finish(probe_rotation(run, dataset, p, feature, limit, seed), st, as_json, "rotation")


@probe_app.command("fewshot")
def fewshot(
    run_dir: Path = RunDirArg,
    dataset: Optional[str] = typer.Option(
        None, help="evaluation dataset (default: embedded-fine at tiny/small, flowers102 at paper scale)"
    ),
    shots: str = typer.Option("5,10", help="comma-separated K (images per class per trial)"),
    trials: int = typer.Option(10, help="trials per K"),
    seed: int = SeedOpt,
    c: float = typer.Option(100.0, "--C", help="inverse L2 strength of the logistic regression"),
    ci: str = typer.Option("t", help="95% half-width: t (Student t, T-1 dof) | normal (1.96 s / sqrt T)"),
    pool: str = typer.Option(
        "auto",
        help="splits the shots are drawn from: train | train+val | auto (train+val where the dataset has a val split)",
    ),
    feature: Optional[str] = FeatureOpt,
    epoch: Optional[int] = EpochOpt,
    results: Optional[Path] = ResultsOpt,
    as_json: bool = JsonOpt,
):
    """K-shot logistic regression on L2-normalised frozen features over T trials: mean (±95% half-width)."""
    from cssl_bench import UserError
    from cssl_bench.eval.fewshot import FewShotProtocol, probe_fewshot

    try:
        ks = [int(s) for s in shots.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--shots must be comma-separated integers, got {shots!r}", exit_code=2) from None
    fp = FewShotProtocol(shots=ks, trials=trials, seed=seed, C=c, ci=ci, pool=pool)  # validates every option (exit 2)
    st = _start(results)
    run = _load(run_dir, epoch)
    dataset = _dataset(run, dataset, _role("flowers", run))
    _check_feature(run, feature)
    recs = probe_fewshot(run, dataset, fp, feature)
    _finish(recs, st, as_json, "few-shot")


@probe_app.command("corruption")
def corruption(
    run_dir: Path = RunDirArg,
    dataset: Optional[str] = typer.Option(
        None, help="clean dataset whose linear probe is scored (default: the run's pretraining dataset)"
    ),
    corrupted: Optional[str] = typer.Option(
        None,
        help="ImageNet-C-style folder: imagenet-c-100 or imagefolder:PATH (CORRUPTION/SEVERITY/CLASS/); default: corrupt the test split on the fly",
    ),
    corruptions: Optional[str] = typer.Option(
        None, help="comma-separated corruptions or groups (noise, blur, weather, digital); default: all 15"
    ),
    severities: Optional[str] = typer.Option(None, help="e.g. 1,3,5 or 4-5; default: 1-5"),
    limit: Optional[int] = typer.Option(None, help="score a seeded subset of this many test images"),
    min_size: int = typer.Option(
        64, "--min-size", help="images with a side under this are corrupted at this size, then downscaled back"
    ),
    seed: int = SeedOpt,
    protocol: str = ProtocolOpt,
    epochs: Optional[int] = EpochsOpt,
    batch_size: Optional[int] = BatchOpt,
    lr: Optional[float] = LrOpt,
    augment: Optional[bool] = AugmentOpt,
    feature_norm: Optional[str] = NormOpt,
    feature: Optional[str] = FeatureOpt,
    epoch: Optional[int] = EpochOpt,
    results: Optional[Path] = ResultsOpt,
    as_json: bool = JsonOpt,
):
    """IN-C-style robustness: the linear probe's top-1 per corruption and severity, then Noise/Blur/Weather/Digital/All/d>3."""
    from cssl_bench.data.corruptions import parse_corruptions, parse_severities
    from cssl_bench.data.datasets import check_dataset_name
    from cssl_bench.eval.corruption import probe_corruption

    _check_protocol(protocol, epochs, batch_size, lr, feature_norm)
    _check_limit(limit)
    cs, ss = parse_corruptions(corruptions), parse_severities(severities)
    if corrupted is not None:
        check_dataset_name(corrupted)
    st = _start(results)
    run = _load(run_dir, epoch)
    dataset = _dataset(run, dataset)
    _check_feature(run, feature)
    p = _protocol(run, protocol, epochs, batch_size, lr, augment, feature_norm)
    recs = probe_corruption(run, dataset, p, feature, cs, ss, limit, seed, min_size, corrupted)
    st.append(recs)
    if as_json:
        print_records(recs, True)
        return
    from rich.table import Table

    from cssl_bench.cli.app import console
    from cssl_bench.eval.corruption import corruption_table

    header, rows = corruption_table(recs)
    t = Table(title=f"top-1 under corruption ({run.recipe.method}, {recs[0]['dataset']}, {recs[0]['feature']})")
    for i, h in enumerate(header):
        t.add_column(h, justify="left" if i == 0 else "right")
    for row in rows:
        t.add_row(*row)
    console.print(t)
    print_records([r for r in recs if r["metric"].count("/") == 1], False, "corruption robustness: group means")


@probe_app.command("objectnet")
def objectnet(
    run_dir: Path = RunDirArg,
    dataset: Optional[str] = typer.Option(
        None, help="shifted test set (default: embedded-shift at tiny/small, objectnet13 at paper scale)"
    ),
    probe_dataset: Optional[str] = typer.Option(
        None,
        "--probe-dataset",
        help="dataset whose linear probe scores it (default: embedded for embedded-shift, imagenet100 for objectnet13)",
    ),
    protocol: str = ProtocolOpt,
    epochs: Optional[int] = EpochsOpt,
    batch_size: Optional[int] = BatchOpt,
    lr: Optional[float] = LrOpt,
    augment: Optional[bool] = AugmentOpt,
    feature_norm: Optional[str] = NormOpt,
    feature: Optional[str] = FeatureOpt,
    epoch: Optional[int] = EpochOpt,
    results: Optional[Path] = ResultsOpt,
    as_json: bool = JsonOpt,
):
    """ObjectNet-13 scoring: the IN-100 probe's logits restricted to the mapped classes; top-1/top-5."""
    from cssl_bench.data.datasets import check_dataset_name
    from cssl_bench.eval.objectnet import probe_objectnet

    _check_protocol(protocol, epochs, batch_size, lr, feature_norm)
    if probe_dataset is not None:
        check_dataset_name(probe_dataset)
    st = _start(results)
    run = _load(run_dir, epoch)
    dataset = _dataset(run, dataset, _role("on13", run))
    _check_feature(run, feature)
    p = _protocol(run, protocol, epochs, batch_size, lr, augment, feature_norm)
    _finish(probe_objectnet(run, dataset, p, feature, probe_dataset), st, as_json, "ObjectNet-13")


@probe_app.command("finegrained")
def finegrained(
    run_dir: Path = RunDirArg,
    dataset: Optional[str] = typer.Option(
        None,
        help="fine-grained dataset: inat2019 | cub200 | flowers102 | ... (default: embedded-fine at tiny/small, inat2019 at paper scale)",
    ),
    protocol: str = ProtocolOpt,
    epochs: Optional[int] = EpochsOpt,
    batch_size: Optional[int] = BatchOpt,
    lr: Optional[float] = LrOpt,
    augment: Optional[bool] = AugmentOpt,
    feature_norm: Optional[str] = NormOpt,
    feature: Optional[str] = FeatureOpt,
    epoch: Optional[int] = EpochOpt,
    results: Optional[Path] = ResultsOpt,
    as_json: bool = JsonOpt,
):
    """Fine-grained linear probe (LooC Table 2): finegrained/top1, finegrained/top5."""
    from cssl_bench.eval.finegrained import probe_finegrained

    _check_protocol(protocol, epochs, batch_size, lr, feature_norm)
    st = _start(results)
    run = _load(run_dir, epoch)
    dataset = _dataset(run, dataset, _role("inat", run))
    _check_feature(run, feature)
    p = _protocol(run, protocol, epochs, batch_size, lr, augment, feature_norm)
    _finish(probe_finegrained(run, dataset, p, feature), st, as_json, "fine-grained")
