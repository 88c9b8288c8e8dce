"""``cssl-bench evaluate RUN_DIR --suite looc|simsiam|all``: every probe a run's tables need (``cssl_bench.eval.suite``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from cssl_bench.cli.app import JsonOpt, ResultsOpt, app, err, print_records, store


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="a pretraining run directory"),
    suite: str = typer.Option(
        "all", help="looc (LooC Tables 1-3, 5) | simsiam (SimSiam Table 4) | all (both, plus kNN)"
    ),
    feature: Optional[str] = typer.Option(
        None, help="feature kind for every probe (default: the run's downstream feature)"
    ),
    probes: list[str] = typer.Option(
        [],
        "--probe",
        help="run only this probe kind (repeatable): linear, rotation, finegrained, fewshot, corruption, objectnet, knn",
    ),
    linear_epochs: Optional[int] = typer.Option(
        None, "--linear-epochs", help="epochs of every linear probe (default: each protocol's)"
    ),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="linear-probe batch size"),
    augment: Optional[bool] = typer.Option(
        None, "--augment/--no-augment", help="linear probes on augmented views (default: on at paper scale only)"
    ),
    rotation_limit: Optional[int] = typer.Option(
        None, "--rotation-limit", help="rotation: a seeded subset of this many train and test images"
    ),
    corruptions: Optional[str] = typer.Option(
        None, help="corruption: comma-separated corruptions or groups (default: all 15)"
    ),
    severities: Optional[str] = typer.Option(None, help="corruption: severities, e.g. 1,3,5 or 4-5 (default: 1-5)"),
    limit: Optional[int] = typer.Option(None, help="corruption: score a seeded subset of this many test images"),
    min_size: int = typer.Option(64, "--min-size", help="corruption: side at which small images are corrupted"),
    shots: str = typer.Option("5,10", help="few-shot K values"),
    trials: int = typer.Option(10, help="few-shot trials"),
    seed: int = typer.Option(0, help="seed of the probes' sampling"),
    epoch: Optional[int] = typer.Option(
        None, help="evaluate the checkpoint kept at this epoch instead of the last one"
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="list the probes and datasets, run nothing"),
    results: Optional[Path] = ResultsOpt,
    as_json: bool = JsonOpt,
):
    """Run every probe of a suite on one run; each probe's records are appended as soon as it finishes."""
    from cssl_bench import UserError
    from cssl_bench.data.corruptions import parse_corruptions, parse_severities
    from cssl_bench.eval import progress
    from cssl_bench.eval.features import load_run
    from cssl_bench.eval.suite import SUITES, SuiteOptions, check_options, run_suite, select_steps

    try:
        ks = [int(s) for s in shots.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--shots must be comma-separated integers, got {shots!r}", exit_code=2) from None
    o = SuiteOptions(
        feature=feature,
        linear_epochs=linear_epochs,
        batch_size=batch_size,
        augment=augment,
        rotation_limit=rotation_limit,
        corruptions=parse_corruptions(corruptions),
        severities=parse_severities(severities),
        corruption_limit=limit,
        min_size=min_size,
        seed=seed,
        shots=ks,
        trials=trials,
        probes=list(probes) or None,
    )
    if suite not in SUITES:
        raise UserError(f"unknown suite {suite!r}; choose from {', '.join(SUITES)}", exit_code=2)
    check_options(o)  # unknown --probe names and out-of-range values fail here, before any probe runs
    st = None if dry_run else store(results, writable=True)
    run = load_run(run_dir, epoch)
    if feature is not None and feature not in run.method.feature_kinds():
        raise UserError(
            f"feature {feature!r} is not available for {run.recipe.method}; choose from {', '.join(run.method.feature_kinds())}",
            exit_code=2,
        )
    steps = select_steps(suite, run.recipe.scale, o.probes)  # a --probe the suite does not run fails here too
    if dry_run:
        for step in steps:
            print(step.describe())
        return
    progress.enable(err)
    everything: list[dict] = []
    timings = []
    for step, recs, secs in run_suite(run, suite, o):
        st.append(recs)
        everything += recs
        timings.append((step.describe(), secs))
        if not as_json:
            print_records(recs, False, f"{step.describe()}  [{secs:.1f} s]")
        else:
            err.print(f"{step.describe()}: {len(recs)} records in {secs:.1f} s")
    if as_json:
        print(json.dumps(everything, indent=2))
    else:
        err.print(f"{len(everything)} records appended; " + ", ".join(f"{name} {s:.1f} s" for name, s in timings))
