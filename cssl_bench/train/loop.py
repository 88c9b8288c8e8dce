"""The pretraining loop. It knows nothing of a method's internals: it calls ``method(views, labels)``,
steps the optimiser, updates the momentum pairs, logs, and checkpoints atomically so that
``--resume`` continues exactly (model, optimiser, queues, momentum encoders, RNG states, position)."""

from __future__ import annotations

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
from cssl_bench.data.loaders import make_train_loader, steps_per_epoch, to_input
from cssl_bench.data.views import build_view_recipe
from cssl_bench.methods import build_method
from cssl_bench.methods.base import update_momentum_pairs
from cssl_bench.train import distributed as D
from cssl_bench.train.checkpoint import (
    FORMAT,
    atomic_write_text,
    find_resume_checkpoint,
    load_checkpoint,
    read_run,
    save_checkpoint,
    write_run_json,
)
from cssl_bench.train.optim import build_optimizer, set_lr
from cssl_bench.train.precision import resolve_precision

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
    train/precision.py). Parameters, gradients and optimiser state stay fp32."""
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


def pretrain(
    recipe: Recipe,
    out_dir: Path,
    resume: bool = False,
    show_progress: bool = True,
    console: Console | None = None,
    stop_after_steps: int | None = None,
) -> Path:
    """Pretrain ``recipe`` into ``out_dir``; returns ``out_dir``. ``stop_after_steps`` (tests) stops early
    after that many optimiser steps of this call, as a kill would, without a final checkpoint."""
    console = console or Console(stderr=True)
    out_dir = Path(out_dir)
    if recipe.train.precision == "auto":  # a recipe not from load_recipe: resolved here, for this run's device
        recipe = copy.deepcopy(recipe)
        resolve_auto_precision(recipe, _device().type)
    precision_requested = recipe.precision_requested  # "auto" when load_recipe resolved it (run.json)
    ckpt_dir = out_dir / "checkpoints"
    main = D.is_main()
    state = None
    loaders_used: list[dict] = []  # the training loaders this run used (run.json ``train_loaders``): data provenance
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
    D.barrier()  # every rank has checked the run directory before rank 0 writes into it

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
    total_steps = max(recipe.train.epochs * spe, 1)
    epoch, step_in_epoch, global_step = 0, 0, 0
    if state is not None:
        if state["method"] != recipe.method:
            raise UserError(f"checkpoint is of method {state['method']}, not {recipe.method}")
        method.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        epoch, step_in_epoch, global_step = state["epoch"], state["step_in_epoch"], state["step"]
        if main:
            _truncate_log(out_dir / "log.csv", global_step)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "config.yaml", recipe.dump())

    _last_ckpt_step = [global_step]
    fault = os.environ.get("CSSL_BENCH_FAULT", "")  # fault injection for the reliability tests (docs/reliability.md)
    _fault_nan_step = int(fault[4:]) if fault.startswith("nan:") and fault[4:].isdigit() else -1

    def checkpoint(path: Path, keep_previous: bool = True):
        if not main:
            return
        if path.name == "last.pt":
            _last_ckpt_step[0] = global_step
        save_checkpoint(
            {
                "format": FORMAT,
                "version": __version__,
                "method": recipe.method,
                "backbone": recipe.model.backbone,
                "config_hash": recipe.hash(),
                "epoch": epoch,
                "step_in_epoch": step_in_epoch,
                "step": global_step,
                "model": method.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": rng_state(),
            },
            path,
            keep_previous,
        )

    last_z = {}  # the last logged z_std (collapse monitor), kept in run.json

    def run_info(status: str):
        if main:
            write_run_json(
                out_dir,
                {
                    "method": recipe.method,
                    "scale": recipe.scale,
                    "config_hash": recipe.hash(),
                    "status": status,
                    "epochs_done": epoch,
                    "epochs": recipe.train.epochs,
                    "steps_done": global_step,
                    "dataset": recipe.data.dataset,
                    "backbone": recipe.model.backbone,
                    "seed": recipe.train.seed,
                    "batch_size": recipe.train.batch_size,
                    "processes": world,
                    "precision": recipe.train.precision,
                    **(
                        {"precision_requested": precision_requested}
                        if precision_requested not in (None, recipe.train.precision)
                        else {}
                    ),
                    **({"train_loaders": loaders_used} if loaders_used else {}),
                    **last_z,
                },
            )

    if state is None:
        checkpoint(ckpt_dir / "last.pt", keep_previous=False)  # epoch 0: the random-init baseline
        if main and 0 in recipe.train.save_epochs:
            checkpoint(ckpt_dir / "epoch_0.pt", keep_previous=False)
    run_info("running")

    writer = None
    if main:
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out_dir / "tb"))
        except Exception:
            writer = None
    log_path = out_dir / "log.csv"
    if main and not log_path.exists():
        with open(log_path, "w", newline="") as f:
            csv.DictWriter(f, LOG_FIELDS).writeheader()

    progress = Progress(
        TextColumn("[bold]{task.fields[name]}"),
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[ips]:.0f} img/s"),
        TimeRemainingColumn(),
        console=console,
        disable=not (show_progress and main),
    )
    steps_this_call = 0
    t0 = time.time()
    with progress:
        task = progress.add_task(
            "pretrain",
            total=total_steps,
            completed=global_step,
            name=recipe.method,
            epoch=epoch,
            loss=float("nan"),
            ips=0.0,
        )
        while epoch < recipe.train.epochs:
            method.on_epoch_start(epoch)
            loader = make_train_loader(local_recipe, source, view_recipe, epoch, step_in_epoch, rank, world)
            if (
                loader.provenance not in loaders_used
            ):  # JPEG storage (FFCV) changes the images: the run says what it read
                loaders_used.append(loader.provenance)
                run_info("running")
            method.train()
            t_last, n_last = time.time(), 0
            for views, labels, _ in loader:
                lr = set_lr(optimizer, recipe, epoch + step_in_epoch / spe)
                views = _move(views, device, recipe.model.channels_last)
                labels = labels.to(device)
                with autocast(recipe.train.precision, device.type):
                    out = model(views, labels)
                loss = out["loss"]
                if _fault_nan_step == global_step + 1:
                    loss = loss * float("nan")
                if not torch.isfinite(loss.detach()):
                    run_info("failed: non-finite loss")
                    raise NonFiniteLoss(
                        f"non-finite loss ({loss.item()}) at step {global_step + 1} (epoch {epoch}); "
                        f"the last good checkpoint (step {_last_ckpt_step[0]}) is kept in {ckpt_dir}; "
                        f"fix the recipe and run again with --resume"
                    )
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                method.after_backward(epoch)
                scaler.step(optimizer)
                scaler.update()
                global_step += 1
                step_in_epoch += 1
                steps_this_call += 1
                pairs = method.momentum_pairs
                if pairs:
                    update_momentum_pairs(pairs, method.momentum(global_step / total_steps))
                n_last += labels.shape[0] * world
                if global_step % recipe.train.log_every == 0 or step_in_epoch == spe:
                    now = time.time()
                    ips = n_last / max(now - t_last, 1e-9)
                    t_last, n_last = now, 0
                    lv = float(D.all_reduce_mean(loss.detach()))  # the global batch's loss (ranks hold equal slices)
                    z_std = ""
                    if "z_std" in out:
                        zv = float(D.all_reduce_mean(out["z_std"]))  # the mean of the ranks'
                        z_std = f"{zv:.5f}"
                        last_z.update({"z_std": round(zv, 6), "z_std_step": global_step})
                        if method.embedding_dim:
                            last_z["z_std_x_sqrt_dim"] = x_sqrt_dim(zv, method.embedding_dim)
                    progress.update(task, completed=global_step, epoch=epoch, loss=lv, ips=ips)
                    if main:
                        with open(log_path, "a", newline="") as f:
                            csv.DictWriter(f, LOG_FIELDS).writerow(
                                {
                                    "epoch": epoch,
                                    "step": global_step,
                                    "loss": f"{lv:.6f}",
                                    "lr": f"{lr:.6g}",
                                    "images_per_s": f"{ips:.1f}",
                                    "elapsed_s": f"{time.time() - t0:.1f}",
                                    "z_std": z_std,
                                }
                            )
                        if writer:
                            writer.add_scalar("loss", lv, global_step)
                            writer.add_scalar("lr", lr, global_step)
                            for k, v in out.items():
                                if k != "loss":
                                    writer.add_scalar(k, float(v), global_step)
                if stop_after_steps is not None and steps_this_call >= stop_after_steps:
                    return out_dir
                every = recipe.train.checkpoint_every
                if every and global_step % every == 0 and step_in_epoch < spe:
                    checkpoint(ckpt_dir / "last.pt")
            epoch += 1
            step_in_epoch = 0
            checkpoint(ckpt_dir / "last.pt")
            if epoch in recipe.train.save_epochs:
                checkpoint(ckpt_dir / f"epoch_{epoch}.pt", keep_previous=False)
            run_info("running" if epoch < recipe.train.epochs else "complete")
    if epoch >= recipe.train.epochs:  # also when a kill fell between the last checkpoint and this line
        run_info("complete")
    if writer:
        writer.close()
    return out_dir
