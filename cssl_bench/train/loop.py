"""The pretraining loop. It knows nothing of a method's internals: it calls ``method(views, labels)``,
steps the optimiser, updates the momentum pairs, logs, and checkpoints atomically so that
``--resume`` continues exactly (model, optimiser, queues, momentum encoders, RNG states, position)."""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import os
import random
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cssl_bench import UserError, __version__
from cssl_bench.collapse import checkpoint_z_std, collapse_warning, x_sqrt_dim
from cssl_bench.config import Recipe, recipe_from_dict, resolve_auto_precision
from cssl_bench.data.datasets import DatasetOptions, get_source
from cssl_bench.data.loader_base import steps_per_epoch, to_input
from cssl_bench.data.train_loader import make_train_loader
from cssl_bench.data.views import build_view_recipe
from cssl_bench.methods import build_method
from cssl_bench.methods.base import update_momentum_pairs
from cssl_bench.precision import resolve_precision
from cssl_bench.train import distributed as D
from cssl_bench.train.checkpoint import (
    FORMAT,
    atomic_write_text,
    find_resume_checkpoint,
    load_checkpoint,
    read_run,
    run_lock,
    save_checkpoint,
    write_run_json,
)
from cssl_bench.train.optim import build_optimizer, set_lr

# z_std: the collapse monitor of the method's embedding (methods.base.output_std), empty where a method has none
LOG_FIELDS = ["epoch", "step", "loss", "lr", "images_per_s", "elapsed_s", "z_std"]


def warn_if_collapsed(run_dir: Path, console: Console, step: int | None = None, dim: int | None = None) -> None:
    """Print ``collapse_warning`` of a run directory, if it has one: at the end of the run (run.json), or, with
    ``step`` and the embedding ``dim``, at the last z_std logged by that step (a kept checkpoint's)."""
    info = read_run(run_dir)[1]
    if step is not None:
        z = checkpoint_z_std(run_dir, step, dim)
        if z is None:
            return
        info = {"method": info.get("method"), "z_std_step": z["step"], "z_std_x_sqrt_dim": z["x_sqrt_dim"]}
    warning = collapse_warning(info)
    if warning:
        from rich.markup import escape

        console.print(f"[yellow]warning[/]: {escape(warning)}")


class NonFiniteLoss(UserError):
    pass


def dataset_options(recipe: Recipe) -> DatasetOptions:
    return DatasetOptions.from_recipe(recipe.data)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    return {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]),
        "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(int(x) for x in state["python"]), None))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), 624, 0, 0.0))


def autocast(precision: str, device_type: str | None = None):
    """Mixed precision for the forward pass and the loss: ``fp32`` (none), ``bf16`` or ``fp16`` autocast
    (fp16 also needs the loop's GradScaler), ``auto`` (bf16 where the device computes it fast, else fp32:
    cssl_bench/precision.py). Parameters, gradients and optimiser state stay fp32."""
    device = device_type or ("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision(precision, device)
    if precision == "fp32":
        return nullcontext()
    if precision not in ("bf16", "fp16"):
        raise UserError(f"unknown precision {precision!r}; choose from fp32, bf16, fp16, auto", exit_code=2)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device, dtype=dtype)


def _device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def _move(views: dict, device, channels_last: bool) -> dict:
    return {k: to_input(v.to(device, non_blocking=True), channels_last) for k, v in views.items()}


def _truncate_log(path: Path, step: int) -> None:
    if not path.exists():
        return
    with open(path) as f:
        rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, LOG_FIELDS)
        w.writeheader()
        w.writerows(rows)


@dataclasses.dataclass
class _Run:
    """One ``pretrain`` call: what it built (recipe, data, method, optimiser), where it writes, and the position
    (epoch, step in the epoch, global step) that checkpoints save and ``--resume`` restores."""

    recipe: Recipe
    local_recipe: Recipe  # train.batch_size: this process's share of the global batch
    out_dir: Path
    main: bool  # rank 0: the process that writes the run directory
    world: int
    rank: int
    device: torch.device
    source: object  # the training split (an ImageSource)
    view_recipe: object
    method: torch.nn.Module
    model: torch.nn.Module  # what the loop calls: the method, or its DDP / compiled wrapper
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    steps_per_epoch: int
    total_steps: int
    precision_requested: str | None
    loaders_used: list[dict]  # the training loaders this run used (run.json ``train_loaders``): data provenance
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    last_ckpt_step: int = 0  # the step of the last checkpoint this process wrote to last.pt (for NonFiniteLoss)
    last_z: dict = dataclasses.field(default_factory=dict)  # the last logged z_std (collapse monitor), in run.json
    fault_nan_step: int = -1
    writer: object = None  # tensorboard's SummaryWriter, when it is installed (rank 0)
    steps_this_call: int = 0
    t0: float = 0.0

    @property
    def ckpt_dir(self) -> Path:
        return self.out_dir / "checkpoints"

    @property
    def log_path(self) -> Path:
        return self.out_dir / "log.csv"


def _resume_state(
    recipe: Recipe, out_dir: Path, resume: bool, precision_requested: str | None
) -> tuple[Recipe, dict | None, list[dict], str | None]:
    """Check ``out_dir`` against ``resume`` and read what a resumed run continues from: (the recipe to run, the
    checkpoint's state or None, the loaders the run used so far, the precision requested). A fresh run refuses a
    directory that holds a run; a resumed one refuses another recipe (naming ``--precision`` when only ``auto``
    resolved differently on this machine)."""
    ckpt_dir = out_dir / "checkpoints"
    state = None
    loaders_used: list[dict] = []
    if resume:
        path = find_resume_checkpoint(out_dir)
        if path is None:
            if not (out_dir / "config.yaml").exists():
                raise UserError(f"nothing to resume in {out_dir} (no config.yaml and no checkpoint)")
        else:
            state = load_checkpoint(path)
        saved, saved_info = read_run(out_dir)
        loaders_used = list(saved_info.get("train_loaders") or [])
        precision_requested = precision_requested or saved_info.get("precision_requested")
        saved_recipe = recipe_from_dict(saved)
        if (
            saved_recipe.hash() != recipe.hash()
            and precision_requested == "auto"
            and saved_recipe.hash()
            == dataclasses.replace(
                recipe, train=dataclasses.replace(recipe.train, precision=saved_recipe.train.precision)
            ).hash()
        ):
            raise UserError(
                f"{out_dir} holds a run in {saved_recipe.train.precision}, but precision auto resolves to "
                f"{recipe.train.precision} on this machine; resume with --precision {saved_recipe.train.precision}"
            )
        if saved_recipe.hash() != recipe.hash():
            raise UserError(
                f"{out_dir} holds a run of another recipe ({saved['method']}, hash {saved_recipe.hash()}); resume with the same options or use another --out"
            )
        recipe = saved_recipe if state is None else recipe
    elif (ckpt_dir / "last.pt").exists() or (ckpt_dir / "prev.pt").exists():
        raise UserError(f"{out_dir} already holds a run; pass --resume to continue it or choose another --out")
    return recipe, state, loaders_used, precision_requested


def _build_run(recipe: Recipe, out_dir: Path, precision_requested: str | None, loaders_used: list[dict]) -> _Run:
    """Seed, then build the training split, the view recipe, the method on its device, the optimiser, the
    gradient scaler and the distributed wrapper, in this order (the order fixes what the seeded RNGs draw)."""
    seed_everything(recipe.train.seed)
    device = _device()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: cuDNN picks its fastest kernels once
    source = get_source(recipe.data.dataset, "train", dataset_options(recipe))
    # train.batch_size is the global batch: each of the ``world`` processes trains on an equal slice, so
    # the recipe (hash, lr scaling, results) does not depend on the number of processes
    world, rank = D.world_size(), D.rank()
    if recipe.train.batch_size % world:
        raise UserError(
            f"batch size {recipe.train.batch_size} cannot be split over {world} processes; use a multiple of {world}",
            exit_code=2,
        )
    if recipe.train.batch_size > len(source):
        raise UserError(
            f"batch size {recipe.train.batch_size} is larger than the dataset ({len(source)} images); use a smaller --batch-size",
            exit_code=2,
        )
    local_recipe = dataclasses.replace(
        recipe, train=dataclasses.replace(recipe.train, batch_size=recipe.train.batch_size // world)
    )
    view_recipe = build_view_recipe(recipe)
    method = build_method(recipe, num_classes=len(source.classes)).to(device)
    if recipe.model.channels_last:
        method = method.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(method, recipe)
    scaler = torch.amp.GradScaler(device.type, enabled=recipe.train.precision == "fp16")
    model = D.distribute(method, recipe.model.sync_bn, device)  # DDP (+ SyncBN, shuffling-BN groups) when distributed
    if recipe.train.compile:
        model = torch.compile(model)
    spe = steps_per_epoch(len(source), local_recipe.train.batch_size, world)
    return _Run(
        recipe=recipe,
        local_recipe=local_recipe,
        out_dir=out_dir,
        main=D.is_main(),
        world=world,
        rank=rank,
        device=device,
        source=source,
        view_recipe=view_recipe,
        method=method,
        model=model,
        optimizer=optimizer,
        scaler=scaler,
        steps_per_epoch=spe,
        total_steps=max(recipe.train.epochs * spe, 1),
        precision_requested=precision_requested,
        loaders_used=loaders_used,
    )


def _restore(run: _Run, state: dict) -> None:
    """Load a checkpoint's state into the run: model (queues and momentum encoders included), optimiser,
    scaler, RNG states and position; ``log.csv`` loses the rows logged after the checkpoint."""
    if state["method"] != run.recipe.method:
        raise UserError(f"checkpoint is of method {state['method']}, not {run.recipe.method}")
    run.method.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    run.epoch, run.step_in_epoch, run.global_step = state["epoch"], state["step_in_epoch"], state["step"]
    if run.main:
        _truncate_log(run.log_path, run.global_step)


def _checkpoint(run: _Run, path: Path, keep_previous: bool = True) -> None:
    """Write the run's state and position to ``path`` atomically (rank 0 only)."""
    if not run.main:
        return
    if path.name == "last.pt":
        run.last_ckpt_step = run.global_step
    save_checkpoint(
        {
            "format": FORMAT,
            "version": __version__,
            "method": run.recipe.method,
            "backbone": run.recipe.model.backbone,
            "config_hash": run.recipe.hash(),
            "epoch": run.epoch,
            "step_in_epoch": run.step_in_epoch,
            "step": run.global_step,
            "model": run.method.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scaler": run.scaler.state_dict(),
            "rng": rng_state(),
        },
        path,
        keep_previous,
    )


def _write_run_info(run: _Run, status: str) -> None:
    """run.json: the run's identity, progress and ``status`` (rank 0 only)."""
    if not run.main:
        return
    recipe = run.recipe
    write_run_json(
        run.out_dir,
        {
            "method": recipe.method,
            "scale": recipe.scale,
            "config_hash": recipe.hash(),
            "status": status,
            "epochs_done": run.epoch,
            "epochs": recipe.train.epochs,
            "steps_done": run.global_step,
            "dataset": recipe.data.dataset,
            "backbone": recipe.model.backbone,
            "seed": recipe.train.seed,
            "batch_size": recipe.train.batch_size,
            "processes": run.world,
            # CPU threads of the process that wrote this (a resumed run: its last part); on the CPU a run's
            # numbers depend on it (reduction order), so records carry it as pretrain_threads
            "torch_threads": torch.get_num_threads(),
            "precision": recipe.train.precision,
            **(
                {"precision_requested": run.precision_requested}
                if run.precision_requested not in (None, recipe.train.precision)
                else {}
            ),
            **({"train_loaders": run.loaders_used} if run.loaders_used else {}),
            **({"plugin": recipe.plugin} if recipe.plugin else {}),  # a method from outside the package
            **run.last_z,
        },
    )


def _open_run_dir(run: _Run, fresh: bool) -> None:
    """Create the run directory with its config.yaml; a fresh run checkpoints epoch 0 (the random-init baseline);
    then run.json says "running", and tensorboard (when installed) and log.csv are opened (rank 0 writes)."""
    if run.main:
        run.out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.out_dir / "config.yaml", run.recipe.dump())
    run.last_ckpt_step = run.global_step
    fault = os.environ.get("CSSL_BENCH_FAULT", "")  # fault injection for the reliability tests (docs/reliability.md)
    run.fault_nan_step = int(fault[4:]) if fault.startswith("nan:") and fault[4:].isdigit() else -1
    if fresh:
        _checkpoint(run, run.ckpt_dir / "last.pt", keep_previous=False)  # epoch 0: the random-init baseline
        if run.main and 0 in run.recipe.train.save_epochs:
            _checkpoint(run, run.ckpt_dir / "epoch_0.pt", keep_previous=False)
    _write_run_info(run, "running")
    if run.main:
        try:
            from torch.utils.tensorboard import SummaryWriter

            run.writer = SummaryWriter(str(run.out_dir / "tb"))
        except Exception:
            run.writer = None
    if run.main and not run.log_path.exists():
        with open(run.log_path, "w", newline="") as f:
            csv.DictWriter(f, LOG_FIELDS).writeheader()


def _progress(console: Console, show: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.fields[name]}"),
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[ips]:.0f} img/s"),
        TimeRemainingColumn(),
        console=console,
        disable=not show,
    )


def _train_step(run: _Run, views: dict, labels: torch.Tensor) -> tuple[dict, torch.Tensor, float]:
    """One optimiser step on a batch: forward under autocast, a finite-loss check (a non-finite loss stops the
    run with the last good checkpoint kept), backward, the method's hook, the step, the momentum pairs'
    update. Returns (the method's outputs, the loss, the learning rate used)."""
    recipe, method = run.recipe, run.method
    lr = set_lr(run.optimizer, recipe, run.epoch + run.step_in_epoch / run.steps_per_epoch)
    views = _move(views, run.device, recipe.model.channels_last)
    labels = labels.to(run.device)
    with autocast(recipe.train.precision, run.device.type):
        out = run.model(views, labels)
    loss = out["loss"]
    if run.fault_nan_step == run.global_step + 1:
        loss = loss * float("nan")
    if not torch.isfinite(loss.detach()):
        _write_run_info(run, "failed: non-finite loss")
        raise NonFiniteLoss(
            f"non-finite loss ({loss.item()}) at step {run.global_step + 1} (epoch {run.epoch}); "
            f"the last good checkpoint (step {run.last_ckpt_step}) is kept in {run.ckpt_dir}; "
            f"fix the recipe and run again with --resume"
        )
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    method.after_backward(run.epoch)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.global_step += 1
    run.step_in_epoch += 1
    run.steps_this_call += 1
    pairs = method.momentum_pairs
    if pairs:
        update_momentum_pairs(pairs, method.momentum(run.global_step / run.total_steps))
    return out, loss, lr


def _log_step(run: _Run, out: dict, loss: torch.Tensor, lr: float, ips: float, progress: Progress, task) -> None:
    """Log the global batch's loss (and z_std) to the progress bar, log.csv and tensorboard (ranks average)."""
    lv = float(D.all_reduce_mean(loss.detach()))  # the global batch's loss (ranks hold equal slices)
    z_std = ""
    if "z_std" in out:
        zv = float(D.all_reduce_mean(out["z_std"]))  # the mean of the ranks'
        z_std = f"{zv:.5f}"
        run.last_z.update({"z_std": round(zv, 6), "z_std_step": run.global_step})
        if run.method.embedding_dim:
            run.last_z["z_std_x_sqrt_dim"] = x_sqrt_dim(zv, run.method.embedding_dim)
    progress.update(task, completed=run.global_step, epoch=run.epoch, loss=lv, ips=ips)
    if run.main:
        with open(run.log_path, "a", newline="") as f:
            csv.DictWriter(f, LOG_FIELDS).writerow(
                {
                    "epoch": run.epoch,
                    "step": run.global_step,
                    "loss": f"{lv:.6f}",
                    "lr": f"{lr:.6g}",
                    "images_per_s": f"{ips:.1f}",
                    "elapsed_s": f"{time.time() - run.t0:.1f}",
                    "z_std": z_std,
                }
            )
        if run.writer:
            run.writer.add_scalar("loss", lv, run.global_step)
            run.writer.add_scalar("lr", lr, run.global_step)
            for k, v in out.items():
                if k != "loss":
                    run.writer.add_scalar(k, float(v), run.global_step)


def _train_epoch(run: _Run, progress: Progress, task, stop_after_steps: int | None) -> bool:
    """Train the rest of epoch ``run.epoch`` (from ``run.step_in_epoch``), logging every ``train.log_every``
    steps and at the epoch's end, with the ``train.checkpoint_every`` checkpoints inside it; then close the
    epoch: last.pt, the kept ``train.save_epochs`` checkpoint, run.json. Returns True when ``stop_after_steps``
    steps of this call are done (stopped as a kill would, without closing the epoch)."""
    recipe, spe = run.recipe, run.steps_per_epoch
    run.method.on_epoch_start(run.epoch)
    loader = make_train_loader(
        run.local_recipe, run.source, run.view_recipe, run.epoch, run.step_in_epoch, run.rank, run.world
    )
    if loader.provenance not in run.loaders_used:  # JPEG storage (FFCV) changes the images: the run says what it read
        run.loaders_used.append(loader.provenance)
        _write_run_info(run, "running")
    run.method.train()
    t_last, n_last = time.time(), 0
    for views, labels, _ in loader:
        out, loss, lr = _train_step(run, views, labels)
        n_last += labels.shape[0] * run.world
        if run.global_step % recipe.train.log_every == 0 or run.step_in_epoch == spe:
            now = time.time()
            ips = n_last / max(now - t_last, 1e-9)
            t_last, n_last = now, 0
            _log_step(run, out, loss, lr, ips, progress, task)
        if stop_after_steps is not None and run.steps_this_call >= stop_after_steps:
            return True
        every = recipe.train.checkpoint_every
        if every and run.global_step % every == 0 and run.step_in_epoch < spe:
            _checkpoint(run, run.ckpt_dir / "last.pt")
    run.epoch += 1
    run.step_in_epoch = 0
    _checkpoint(run, run.ckpt_dir / "last.pt")
    if run.epoch in recipe.train.save_epochs:
        _checkpoint(run, run.ckpt_dir / f"epoch_{run.epoch}.pt", keep_previous=False)
    _write_run_info(run, "running" if run.epoch < recipe.train.epochs else "complete")
    return False


def _finish(run: _Run) -> None:
    """Mark the run complete (also when a kill fell between the last checkpoint and this call) and close tensorboard."""
    if run.epoch >= run.recipe.train.epochs:
        _write_run_info(run, "complete")
    if run.writer:
        run.writer.close()


def pretrain(
    recipe: Recipe,
    out_dir: Path,
    resume: bool = False,
    show_progress: bool = True,
    console: Console | None = None,
    stop_after_steps: int | None = None,
) -> Path:
    """Pretrain ``recipe`` into ``out_dir``; returns ``out_dir``. ``stop_after_steps`` (tests) stops early
    after that many optimiser steps of this call, as a kill would, without a final checkpoint.

    Steps: resolve ``auto`` precision for this device; check the run directory and read the resume state
    (``_resume_state``); build the run (``_build_run``); restore the checkpoint (``_restore``); open the run
    directory (``_open_run_dir``); train epoch by epoch (``_train_epoch``); finish (``_finish``). The run directory
    is locked throughout (``checkpoint.run_lock``): a second process training into it fails with a one-line error."""
    console = console or Console(stderr=True)
    out_dir = Path(out_dir)
    # rank 0 holds the run directory's lock for the whole run (the other ranks of a torchrun job share it)
    with run_lock(out_dir) if D.rank() == 0 else contextlib.nullcontext():
        return _pretrain(recipe, out_dir, resume, show_progress, console, stop_after_steps)


def _pretrain(
    recipe: Recipe,
    out_dir: Path,
    resume: bool,
    show_progress: bool,
    console: Console,
    stop_after_steps: int | None,
) -> Path:
    """``pretrain``'s steps, with the run directory locked."""
    if recipe.train.precision == "auto":  # a recipe not from load_recipe: resolved here, for this run's device
        recipe = copy.deepcopy(recipe)
        resolve_auto_precision(recipe, _device().type)
    recipe, state, loaders_used, precision_requested = _resume_state(
        recipe,
        out_dir,
        resume,
        recipe.precision_requested,  # "auto" when load_recipe resolved it (run.json)
    )
    D.barrier()  # every rank has checked the run directory before rank 0 writes into it

    run = _build_run(recipe, out_dir, precision_requested, loaders_used)
    if state is not None:
        _restore(run, state)
    _open_run_dir(run, fresh=state is None)

    progress = _progress(console, show_progress and run.main)
    run.t0 = time.time()
    with progress:
        task = progress.add_task(
            "pretrain",
            total=run.total_steps,
            completed=run.global_step,
            name=recipe.method,
            epoch=run.epoch,
            loss=float("nan"),
            ips=0.0,
        )
        while run.epoch < recipe.train.epochs:
            if _train_epoch(run, progress, task, stop_after_steps):
                return out_dir
    _finish(run)
    return out_dir
