"""``cssl-bench pretrain`` and ``cssl-bench methods``.

Several processes (GPUs, or CPU processes with gloo) run through PyTorch's launcher, torchrun:
``cssl-bench pretrain METHOD --nproc N`` re-launches itself as
``python -m torch.distributed.run --nproc-per-node N -m cssl_bench pretrain METHOD ...``; running
``torchrun ... -m cssl_bench pretrain ...`` directly is the same (and is the way to pass any other
torchrun flag). Multi-node: see docs/distributed.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from cssl_bench import UserError
from cssl_bench.cli.app import app, console, err


def default_run_dir(method: str, scale: str, config_hash: str, seed: int) -> Path:
    return Path("runs") / f"{method.replace('+', 'p')}-{scale}-{config_hash}-s{seed}"


def build_recipe(
    method: str,
    scale: str,
    dataset: Optional[str],
    epochs: Optional[int],
    batch_size: Optional[int],
    backbone: Optional[str],
    seed: Optional[int],
    lr: Optional[float],
    image_size: Optional[int],
    workers: Optional[int],
    augment: Optional[str],
    precision: Optional[str],
    save_epochs: Optional[str],
    sets: list[str],
    compile: Optional[bool] = None,
    channels_last: Optional[bool] = None,
    sync_bn: Optional[bool] = None,
    variance_heads: Optional[str] = None,
    skip_bad: Optional[bool] = None,
    method_file: Optional[Path] = None,
    recipe_file: Optional[Path] = None,
):
    from cssl_bench.config import builtin_methods, load_recipe
    from cssl_bench.data.datasets import check_dataset_name

    if method_file is not None or recipe_file is not None or method not in builtin_methods():
        from cssl_bench.methods.plugins import use_method

        use_method(method, method_file, recipe_file)  # a plugin: its recipe registered for load_recipe (exit 2 if bad)

    ov: dict = {}
    epochs_to_save = _parse_save_epochs(save_epochs) if save_epochs else None

    def put(sec, key, val):
        if val is not None:
            ov.setdefault(sec, {})[key] = val

    if dataset is not None:
        check_dataset_name(dataset)
    put("data", "dataset", dataset)
    put("data", "image_size", image_size)
    put("data", "workers", workers)
    put("data", "skip_bad", skip_bad)
    put("train", "epochs", epochs)
    put("train", "batch_size", batch_size)
    put("train", "seed", seed)
    put("train", "precision", precision)
    put("train", "compile", compile)
    put("model", "channels_last", channels_last)
    put("model", "sync_bn", sync_bn)
    put("model", "backbone", backbone)
    put("optim", "base_lr", lr)
    if augment is not None:
        put("augment", "looc_augment", [a.strip() for a in augment.split(",") if a.strip()])
    if variance_heads is not None:
        heads = [h.strip() for h in variance_heads.split(",") if h.strip()]
        put("augment", "looc_heads", [] if heads == ["none"] else heads)
    put("train", "save_epochs", epochs_to_save)
    recipe = load_recipe(method, scale, ov, sets)
    if recipe.augment.views != "looc":
        for opt, val in (("--augment", augment), ("--variance-heads", variance_heads)):
            if val is not None:
                raise UserError(f"{opt} applies only to the LooC methods (looc, looc++), not to {method}", exit_code=2)
    if epochs_to_save is not None or any(s.split("=", 1)[0].strip() == "train.save_epochs" for s in sets):
        beyond = [e for e in recipe.train.save_epochs if e > recipe.train.epochs]
        if beyond:
            raise UserError(
                f"--save-epochs {','.join(map(str, recipe.train.save_epochs))}: epoch {beyond[0]} is beyond the run's "
                f"{recipe.train.epochs} epochs",
                exit_code=2,
            )
    return recipe


def _parse_save_epochs(text: str) -> list[int]:
    parts = [x.strip() for x in text.split(",")]
    if not all(p.isdigit() for p in parts):
        raise UserError(f"--save-epochs {text!r} must be comma-separated epochs >= 0 (e.g. 100,200,400)", exit_code=2)
    return [int(p) for p in parts]


def _check_launch_options(nproc: Optional[int], nnodes: int, node_rank: int, rdzv_endpoint: Optional[str]) -> None:
    """The launcher options, checked before any work: none of them may be silently ignored."""
    if nproc is None:
        given = [
            o
            for o, v in (("--nnodes", nnodes != 1), ("--node-rank", node_rank != 0), ("--rdzv-endpoint", rdzv_endpoint))
            if v
        ]
        if given:
            raise UserError(
                f"{given[0]} needs --nproc N (processes per node): the launcher options apply to the "
                f"torchrun re-launch only",
                exit_code=2,
            )
        return
    if nproc < 1 or nnodes < 1:
        raise UserError(f"--nproc and --nnodes must be >= 1, got {nproc} and {nnodes}", exit_code=2)
    if not 0 <= node_rank < nnodes:
        raise UserError(f"--node-rank must be in 0..{nnodes - 1} (--nnodes {nnodes}), got {node_rank}", exit_code=2)
    if rdzv_endpoint is not None:
        if nnodes == 1:
            raise UserError(
                "--rdzv-endpoint applies only with --nnodes > 1 (one node uses a standalone rendezvous)", exit_code=2
            )
        host, sep, port = rdzv_endpoint.rpartition(":")
        if not sep or not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
            raise UserError(f"--rdzv-endpoint {rdzv_endpoint!r} must be HOST:PORT (e.g. node0:29400)", exit_code=2)


# options of the launcher shortcut; they are not passed on to the launched processes
_LAUNCH_OPTIONS = ("nproc", "nnodes", "node_rank", "rdzv_endpoint")


def _relaunch_argv(ctx: typer.Context) -> list[str]:
    """This ``pretrain`` invocation as command-line arguments, without the launcher options."""
    argv = ["pretrain"]
    for param in ctx.command.params:
        name = param.name
        if name in _LAUNCH_OPTIONS:
            continue
        value = ctx.params.get(name)
        if param.param_type_name == "argument":
            argv.append(str(value))
            continue
        if value is None or value == param.default or (param.multiple and not value):
            continue
        if getattr(param, "is_flag", False):
            flag = param.opts[0] if value else (param.secondary_opts or [None])[0]
            if flag:
                argv.append(flag)
            continue
        for v in value if param.multiple else [value]:
            argv += [param.opts[0], str(v)]
    return argv


def torchrun_command(
    pretrain_argv: list[str],
    nproc: int,
    nnodes: int = 1,
    node_rank: int = 0,
    rdzv_endpoint: Optional[str] = None,
    rdzv_id: str = "cssl-bench",
) -> list[str]:
    """``python -m torch.distributed.run`` launching ``python -m cssl_bench PRETRAIN_ARGV`` on ``nproc``
    processes per node. One node: a standalone rendezvous on a free local port. Several nodes: c10d
    rendezvous at ``rdzv_endpoint`` (HOST:PORT of one of the nodes), the same command on every node."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc)]
    if nnodes > 1:
        if not rdzv_endpoint:
            raise UserError(
                "--nnodes > 1 needs --rdzv-endpoint HOST:PORT (an address of one node, the same on every node)",
                exit_code=2,
            )
        cmd += [
            "--nnodes",
            str(nnodes),
            "--node-rank",
            str(node_rank),
            "--rdzv-backend",
            "c10d",
            "--rdzv-endpoint",
            rdzv_endpoint,
            "--rdzv-id",
            rdzv_id,
        ]
    else:
        cmd += ["--standalone"]
    return cmd + ["-m", "cssl_bench", *pretrain_argv]


def _launch(
    ctx: typer.Context, nproc: int, nnodes: int, node_rank: int, rdzv_endpoint: Optional[str], rdzv_id: str
) -> None:
    cmd = torchrun_command(_relaunch_argv(ctx), nproc, nnodes, node_rank, rdzv_endpoint, rdzv_id)
    env = dict(os.environ)
    if "OMP_NUM_THREADS" not in env:
        import torch

        from cssl_bench.train.distributed import threads_per_process

        # torchrun would set 1 thread per process; on CPUs the cores are better shared out between the processes
        env["OMP_NUM_THREADS"] = "1" if torch.cuda.is_available() else str(threads_per_process(nproc))
    rc = subprocess.call(cmd, env=env)
    if rc:
        raise typer.Exit(rc)


@app.command()
def pretrain(
    ctx: typer.Context,
    method: str = typer.Argument(..., help="method name: see 'cssl-bench methods'"),
    method_file: Optional[Path] = typer.Option(
        None,
        "--method-file",
        help="a Python file defining the method (a cssl_bench.methods.Method subclass), called METHOD "
        "(docs/adding-a-method.md)",
    ),
    recipe_file: Optional[Path] = typer.Option(
        None, "--recipe", help="the plugin method's recipe YAML (default: the one its class names)"
    ),
    dataset: Optional[str] = typer.Option(
        None, help="dataset name or imagefolder:PATH (default: the scale's, 'embedded' at tiny/small)"
    ),
    scale: str = typer.Option("tiny", help="tiny | small | paper"),
    epochs: Optional[int] = typer.Option(
        None, help="pretraining epochs (0 writes the initialised model: the random-init baseline)"
    ),
    batch_size: Optional[int] = typer.Option(
        None, "--batch-size", help="global batch size (split evenly over the processes)"
    ),
    backbone: Optional[str] = typer.Option(None, help="resnet18, resnet50, resnet18-w0.25, or a timm model name"),
    seed: Optional[int] = typer.Option(None, help="random seed"),
    lr: Optional[float] = typer.Option(None, help="base learning rate (scaled by batch/256 when the recipe says so)"),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="training crop size in pixels"),
    workers: Optional[int] = typer.Option(None, help="data-loading worker processes"),
    augment: Optional[str] = typer.Option(
        None, help="LooC atomic augmentations, comma-separated: color,rotation,texture (looc, looc++ only)"
    ),
    variance_heads: Optional[str] = typer.Option(
        None,
        "--variance-heads",
        help="LooC: the augmentations (of --augment) that get a variance "
        "head, comma-separated, or 'none' (LooC Table 5); default: every augmentation",
    ),
    skip_bad: Optional[bool] = typer.Option(
        None,
        "--skip-bad/--no-skip-bad",
        help="read unreadable image files as black images instead of failing (recipe data.skip_bad)",
    ),
    precision: Optional[str] = typer.Option(
        None,
        help="fp32 | bf16 | fp16 | auto (autocast; fp16 adds a GradScaler). "
        "auto: bf16 on a GPU with native bf16 (Ampere+) or a CPU with AMX-BF16/AVX512-BF16, "
        "else fp32; the run records the resolved one (see 'cssl-bench info'). "
        "tiny and small default to auto",
    ),
    save_epochs: Optional[str] = typer.Option(
        None, "--save-epochs", help="comma-separated epochs whose checkpoints are kept (epoch budgets)"
    ),
    sets: list[str] = typer.Option(
        [], "--set", help="recipe override section.key=value, repeatable (e.g. --set optim.weight_decay=1e-5)"
    ),
    out: Optional[Path] = typer.Option(None, help="run directory (default: runs/METHOD-SCALE-HASH-sSEED)"),
    resume: bool = typer.Option(False, help="continue the run in --out from its last checkpoint"),
    quiet: bool = typer.Option(False, help="no progress bar"),
    compile: Optional[bool] = typer.Option(
        None, "--compile/--no-compile", help="torch.compile the training step (recipe train.compile)"
    ),
    channels_last: Optional[bool] = typer.Option(
        None, "--channels-last/--no-channels-last", help="channels-last memory format (recipe model.channels_last)"
    ),
    sync_bn: Optional[bool] = typer.Option(
        None,
        "--sync-bn/--no-sync-bn",
        help="BN statistics over the global batch when distributed (recipe model.sync_bn)",
    ),
    nproc: Optional[int] = typer.Option(
        None, "--nproc", help="processes per node: re-launch through torchrun (GPUs: one per GPU; CPU: gloo)"
    ),
    nnodes: int = typer.Option(1, "--nnodes", help="with --nproc: number of nodes (run the same command on each)"),
    node_rank: int = typer.Option(0, "--node-rank", help="with --nnodes: this node's rank, 0..nnodes-1"),
    rdzv_endpoint: Optional[str] = typer.Option(
        None, "--rdzv-endpoint", help="with --nnodes: HOST:PORT of the rendezvous (one node's address)"
    ),
):
    """Pretrain one method (its recipe at --scale, plus overrides); prints the run directory.

    Several processes: --nproc N (or torchrun --nproc-per-node N -m cssl_bench pretrain ...)."""
    from cssl_bench.train import distributed as D

    _check_launch_options(nproc, nnodes, node_rank, rdzv_endpoint)
    recipe = build_recipe(
        method,
        scale,
        dataset,
        epochs,
        batch_size,
        backbone,
        seed,
        lr,
        image_size,
        workers,
        augment,
        precision,
        save_epochs,
        sets,
        compile,
        channels_last,
        sync_bn,
        variance_heads,
        skip_bad,
        method_file,
        recipe_file,
    )
    out = out or default_run_dir(method, scale, recipe.hash(), recipe.train.seed)
    if nproc is not None and not D.launched_by_torchrun():
        if recipe.train.batch_size % (nproc * nnodes):
            raise UserError(
                f"batch size {recipe.train.batch_size} cannot be split over {nproc * nnodes} processes; "
                f"use a multiple of {nproc * nnodes}",
                exit_code=2,
            )
        if nproc * nnodes > 1:
            _launch(ctx, nproc, nnodes, node_rank, rdzv_endpoint, f"cssl-{recipe.hash()}-s{recipe.train.seed}")
            return
    D.init_from_env()
    try:
        _pretrain(recipe, out, resume, quiet, D.is_main())
    except BaseException:
        D.cleanup(barrier=False)  # other ranks may be waiting in a collective: do not wait for them
        raise
    D.cleanup()


def _pretrain(recipe, out: Path, resume: bool, quiet: bool, main: bool) -> None:
    from cssl_bench.train.checkpoint import run_complete
    from cssl_bench.train.loop import pretrain as run
    from cssl_bench.train.loop import warn_if_collapsed

    if resume and recipe.plugin and main:
        _warn_if_plugin_changed(recipe, out)
    if not resume and (out / "checkpoints" / "last.pt").exists() and run_complete(out, recipe):
        if main:
            err.print(f"[green]already complete[/]: {out}")
    else:
        if main and recipe.train.precision == "fp16":
            import torch

            if not torch.cuda.is_available():
                print(
                    "warning: --precision fp16 on the CPU is very slow (CPUs lack fast fp16 kernels); "
                    "bf16 or fp32 are the CPU choices",
                    file=sys.stderr,
                )
        run(recipe, out, resume=resume, show_progress=not quiet, console=err)
    if main:
        warn_if_collapsed(out, err)
        print(out)


def _warn_if_plugin_changed(recipe, out: Path) -> None:
    """Resuming a plugin run with other code than it started with: say so (the run mixes the two)."""
    import yaml

    from cssl_bench.methods.plugins import changed

    try:
        saved = (yaml.safe_load((out / "config.yaml").read_text()) or {}).get("plugin")
    except (OSError, yaml.YAMLError, AttributeError):
        return
    why = changed(saved, recipe.plugin) if isinstance(saved, dict) else None
    if why:
        err.print(f"[yellow]warning:[/] {why}; the resumed run continues with the code as it is now", highlight=False)


@app.command()
def methods(
    method_file: Optional[Path] = typer.Option(
        None, "--method-file", help="also list the method defined in this Python file (under the file's name)"
    ),
    recipe_file: Optional[Path] = typer.Option(None, "--recipe", help="with --method-file: its recipe YAML"),
):
    """List the methods with a one-line description, their paper and where they come from: built-in, an installed
    plugin (entry point group cssl_bench.methods), or --method-file (docs/adding-a-method.md)."""
    from importlib import metadata

    from rich.markup import escape

    from cssl_bench.config import _load_yaml, builtin_methods

    if recipe_file is not None and method_file is None:
        raise UserError("--recipe needs --method-file (an installed plugin names its own recipe)", exit_code=2)
    rows = []
    for m in builtin_methods():
        y = _load_yaml(m)
        rows.append((m, y.get("description", ""), y.get("paper", ""), "built-in"))
    if method_file is not None or metadata.entry_points(group="cssl_bench.methods"):  # plugin code imports torch
        from cssl_bench.methods import plugins

        if method_file is not None:
            # a package's __init__.py is listed under its folder's name
            base = method_file.parent.name if method_file.stem == "__init__" else method_file.stem
            stem = "".join(c if c.isalnum() or c in "._+-" else "-" for c in base)
            plugins.use_method(stem, method_file, recipe_file)
        rows += plugins.listing()
    t = Table(title="methods")
    for col in ("name", "description", "paper", "source"):
        t.add_column(col)
    for row in rows:
        t.add_row(*map(escape, row))
    console.print(t)
