"""``cssl-bench table NAME``, ``cssl-bench reproduce NAME|all`` and ``cssl-bench plot NAME``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from cssl_bench import UserError
from cssl_bench.cli.app import ResultsOpt, app, console, err, store

ScaleOpt = typer.Option(None, help="which scale's records: tiny | small | paper (default: the newest record's)")


def _check_scale(scale: Optional[str]) -> None:
    if scale is not None and scale not in ("tiny", "small", "paper"):
        raise UserError(f"unknown scale {scale!r}; choose from tiny, small, paper", exit_code=2)


@app.command()
def table(
    name: Optional[str] = typer.Argument(None, help="table name or alias (see --list)"),
    results: Optional[Path] = ResultsOpt,
    fmt: str = typer.Option("md", "--format", help="md | csv | json"),
    compare: str = typer.Option(
        "paper",
        "--compare",
        help="'paper' (default): paper | ours | delta per cell, the paper's numbers beside ours; 'none': our numbers only, in the paper's exact columns",
    ),
    scale: Optional[str] = ScaleOpt,
    provenance: bool = typer.Option(
        False, "--provenance", help="list, per cell, the record ids, runs and commands behind it"
    ),
    seeds: Optional[int] = typer.Option(
        None, help="only seeds 0..N-1 of each configuration (the caption names cells with fewer); default: every seed"
    ),
    list_: bool = typer.Option(False, "--list", help="list the tables with their captions"),
    add: list[str] = typer.Option(
        [],
        "--add",
        help="append a row of your own, repeatable: a method (its records, e.g. a plugin's), a run directory or a "
        "run id; same columns, Δ against the paper's best row (docs/adding-a-method.md)",
    ),
):
    """Render a paper table in its own layout from the results store ('–' where no record exists)."""
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
    if compare not in ("none", "paper"):
        raise UserError(f"unknown --compare {compare!r}; choose from paper, none", exit_code=2)
    _check_scale(scale)
    tables.check_seeds(seeds)
    spec = tables.resolve(name)
    st = store(results)
    if not st.path.exists():
        err.print(f"[yellow]warning:[/] no results store at {st.path}: every cell is '–' (pass --results FOLDER)")
    records = st.read()
    added = [tables.added_row(spec, a, records) for a in add]
    rendered = tables.build(name, records, scale, seeds, add=added)
    for row, values in zip(added, rendered.ours[len(rendered.ours) - len(added) :]):
        if not any(isinstance(v, tables.Value) for v in values):
            err.print(
                f"[yellow]warning:[/] no records of {row.label} fill table {spec.name} at {rendered.scale} scale "
                f"(its row is '–'); 'cssl-bench reproduce {spec.name} --add METHOD' runs what the row needs",
                highlight=False,
                soft_wrap=True,
            )
    print(tables.render(rendered, fmt, compare == "paper", provenance), end="")


@app.command()
def reproduce(
    name: str = typer.Argument(..., help="table name or alias, or 'all' for the six tables"),
    scale: str = typer.Option("tiny", help="tiny | small (CPU, embedded stand-ins) | paper (the real datasets)"),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="list the runs and probes (and what is already done); run nothing"
    ),
    results: Optional[Path] = ResultsOpt,
    runs: Path = typer.Option(Path("runs"), "--runs", help="folder for the run directories"),
    seeds: int = typer.Option(1, help="seeds per configuration (0..N-1); tables show their mean"),
    rows: Optional[str] = typer.Option(None, help="only these rows of a single table, 1-based and comma-separated"),
    sets: list[str] = typer.Option(
        [], "--set", help="recipe override for every pre-training, section.key=value (changes the runs' hashes)"
    ),
    quiet: bool = typer.Option(False, help="no training progress bars"),
    jobs: int = typer.Option(
        1,
        "--jobs",
        "-j",
        help="runs (a pre-training, then its probes) at once, each in its own process with cores/JOBS torch "
        "threads, longest first; progress bars are off when JOBS > 1. A run's numbers depend on its thread count",
    ),
    add: list[str] = typer.Option(
        [],
        "--add",
        help="a method of your own (e.g. a plugin), repeatable: run only what its row needs (plus --rows, if "
        "given), then show the table with its row (docs/adding-a-method.md)",
    ),
    method_file: Optional[Path] = typer.Option(
        None, "--method-file", help="with one --add NAME: the Python file defining that method"
    ),
    recipe_file: Optional[Path] = typer.Option(None, "--recipe", help="with one --add NAME: its recipe YAML"),
    baseline: Optional[bool] = typer.Option(
        None,
        "--baseline/--no-baseline",
        help="also the random-init baselines (an epoch-0 run per seed, probed as initialised and with BN statistics "
        "re-estimated on the training images) of the tables; default: yes, unless only --add rows are planned",
        show_default=False,
    ),
):
    """Run every pre-training and probe a table needs (skipping what the store holds), then print it."""
    from cssl_bench.pipeline import reproduce as R
    from cssl_bench.results import tables

    names = list(tables.TABLES) if name == "all" else [tables.resolve(name).name]
    row_list = None
    if rows:
        try:
            row_list = [int(x) for x in rows.split(",") if x.strip()]
        except ValueError:
            raise UserError(f"--rows takes row numbers such as 1,3; got {rows!r}", exit_code=2) from None
    if baseline is None:  # --add alone runs only what its rows need
        baseline = not add or row_list is not None
    R.check_jobs(jobs)  # before planning, which builds every model once
    plan = R.plan(names, scale, seeds, results, runs, row_list, sets, add, method_file, recipe_file, baseline)
    if dry_run:
        _show_plan(plan)
        return
    R.execute(plan, err, show_progress=not quiet, jobs=jobs)
    written = R.write_outputs(names, scale, plan.results, add)
    records = store(plan.results).read()
    for n in names:
        added = [tables.method_row(tables.resolve(n), m) for m in add]
        print(tables.render(tables.build(n, records, scale, add=added), "md", compare=True))
    err.print("wrote " + ", ".join(str(p) for p in written))


def _show_plan(plan) -> None:
    from rich.markup import escape

    from cssl_bench.pipeline import reproduce as R

    t = Table(title=f"reproduce {', '.join(plan.tables)} at {plan.scale} scale", show_lines=False)
    for col in ("step", "what", "status", "est. min"):
        t.add_column(col, justify="right" if col in ("step", "est. min") else "left")
    i = 0
    for r in plan.runs:
        i += 1
        cpu = plan.scale in R.CPU_SCALES
        mins = f"{R.run_minutes(r, plan.scale):.1f}" if cpu and r.status in ("run", "resume", "unavailable") else ""
        detail = f"pretrain {r.label}: {r.spec.method}, {r.spec.epochs} epochs"
        if r.spec.save_epochs:
            detail += f", checkpoints at {','.join(map(str, r.spec.save_epochs))}"
        if r.spec.augment is not None:
            detail += f", augment {','.join(r.spec.augment) or '(none)'}"
        t.add_row(str(i), escape(detail), escape(r.status + (f": {r.error}" if r.error else "")), mins)
        for q in plan.probes:
            if q.run is r:
                i += 1
                est = f"{R.probe_minutes(q, plan.scale):.1f}" if cpu and q.status in ("run", "unavailable") else ""
                t.add_row(str(i), escape("  " + q.describe() + f"  (for {', '.join(q.tables)})"), q.status, est)
    console.print(t)
    mins = plan.minutes()
    console.print(
        f"{len(plan.runs)} pre-trainings ({len(plan.todo_runs)} to run), {len(plan.probes)} probes "
        f"({len(plan.todo_probes)} to run)"
        + (f"; estimated {mins:.0f} min on 2 CPU cores" if mins is not None else "")
        + " (measured costs; the first corruption probe also renders the corrupted test images once)"
        * (mins is not None and any(q.kind == "corruption" for q in plan.todo_probes))
        + f"; results -> {plan.results}, runs -> {plan.runs_dir}"
    )
    for _kind, why in plan.missing_probes().items():
        console.print(f"[yellow]not runnable yet[/]: {escape(why)}")
    for label, why in R.unavailable_runs(plan):
        console.print(f"[yellow]will be skipped[/] {escape(label)}: {escape(why)} (its cells stay '–')")
    if plan.scale == "paper":
        for ds, what in sorted(plan.datasets().items()):
            why = R.dataset_status(ds)
            console.print(
                f"dataset {ds} ({', '.join(what)}): "
                + ("[green]found[/]" if why is None else f"[red]missing[/] ({why})")
            )


@app.command()
def plot(
    name: str = typer.Argument(
        ...,
        help="table name or alias, or 'all' for the six tables: our cells with seed error bars and the higher "
        "random-init baseline as a dashed line (methods: accuracy vs epochs; robustness: also per-corruption bars)",
    ),
    results: Optional[Path] = ResultsOpt,
    scale: Optional[str] = ScaleOpt,
    out: Optional[Path] = typer.Option(
        None, help="PNG file (default: RESULTS/plots/NAME.png); with 'all', the folder (default: RESULTS/plots)"
    ),
):
    """Draw a table's figure as a PNG (with 'all', every table's that has results); prints the paths."""
    from cssl_bench.results import plots, tables

    _check_scale(scale)
    st = store(results)
    if name == "all":
        written, skipped = plots.plot_all(st.read(), scale, out or st.root / "plots")
        for why in skipped:
            err.print(f"[yellow]skipped:[/] {why}", highlight=False, soft_wrap=True)
        if not written:
            raise UserError("no table has results to plot" + (f" at scale {scale}" if scale else ""))
        for path in written:
            print(path)
        return
    spec = tables.resolve(name)
    path = plots.plot(spec.name, st.read(), scale, out or st.root / "plots" / f"{spec.name}.png")
    print(path)
