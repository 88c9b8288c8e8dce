"""Training-step throughput of every method, its FLOP/s against the machine's matmul peak, and the
same step built from lightly (https://github.com/lightly-ai/lightly), measured in the same run.

One step is the pretraining loop's step (``cssl_bench.train.loop``): autocast forward and loss, finite
check, backward, the method's after-backward hook, optimiser step (with a GradScaler for fp16) and the
momentum-encoder update. Inputs are synthetic normalised views already on the device, with the names
and sizes of the method's view recipe (SwAV: 2 large + 6 small crops; LooC: q, k0, k1, k2), so data
loading is excluded (``benchmarks/loaders.py`` measures it). Recipes are the ``paper`` scale's
(projector widths, queues, optimiser) with the backbone, image size and batch of each configuration:

- ``r18-32``: ResNet-18 with the CIFAR stem at 32 px; ``r50-64``: ResNet-50 (CIFAR stem) at 64 px;
  ``r50-224``: ResNet-50 (ImageNet stem) at 224 px.

lightly's step follows its examples (``examples/pytorch/*.py``) with the same backbone module, head
widths, loss, optimiser class (LARS where the recipe uses LARS), batch, precision and memory format;
LooC has no lightly counterpart. Our and lightly's steps are timed in alternating rounds (the CPU may
be shared) and the ratio is the median of the per-round ratios.

FLOPs of one step are counted by ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and
convolutions, forward and backward; optimiser excluded). The peak is a large square matmul in the
step's compute dtype (fp32, or bf16/fp16 under autocast), best of a few timed loops, measured again
next to every timed round, and "of peak" is the median over rounds of the step's FLOP/s over the
peak measured next to it (on a shared CPU both drift with the neighbours' load).

    python benchmarks/train_step.py --quick                       # CPU: r18-32 at a small batch, ~5 min
    python benchmarks/train_step.py --configs r18-32 --methods simclr,byol --batch 64
    python benchmarks/train_step.py --device cuda --precision bf16 --channels-last   # GPU: every config
    python benchmarks/train_step.py --quick --channels-last --methods moco-v2,looc --bn-splits 1

``--bn-splits N`` compares at equal semantics: MoCo's and LooC's emulated shuffling BN (the recipe's
``params.bn_splits`` groups) against lightly's plain BN. Ours runs with ``params.bn_splits=N`` (1: plain BN),
and our step at the recipe's groups is timed in the same alternating rounds, so its cost (step time at the
recipe's groups over step time at N) is reported on its own line. ``--precision auto`` resolves as the
training loop does (``cssl_bench.train.precision``: bf16 only on a CPU with AMX-BF16 or AVX512-BF16); the
record holds the resolved precision, why, and the CPU's flags.

Prints a table and writes ``benchmarks/results/train_step-DEVICE-PRECISION[-cl][-compiled][-bnN][-quick].json``
(``--out``) with the machine description, the matmul peaks and every row (step times of every round).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from cssl_bench.config import load_recipe  # noqa: E402
from cssl_bench.data.views import build_view_recipe  # noqa: E402
from cssl_bench.methods import build_method  # noqa: E402
from cssl_bench.methods.base import update_momentum_pairs  # noqa: E402
from cssl_bench.nn.backbones import build_backbone  # noqa: E402
from cssl_bench.nn.norm import SplitBatchNorm2d  # noqa: E402
from cssl_bench.precision import explain_auto  # noqa: E402
from cssl_bench.train.checkpoint import atomic_write_text  # noqa: E402
from cssl_bench.train.loop import autocast  # noqa: E402
from cssl_bench.train.optim import build_optimizer  # noqa: E402

CONFIGS = {"r18-32": ("resnet18", 32), "r50-64": ("resnet50", 64), "r50-224": ("resnet50", 224)}
METHODS = ["simclr", "moco-v2", "byol", "simsiam", "swav", "looc"]
# default batch per configuration (CPU, GPU): CPU steps take seconds, GPU batches fill the device
BATCH = {"cpu": {"r18-32": 32, "r50-64": 16, "r50-224": 4}, "cuda": {"r18-32": 512, "r50-64": 256, "r50-224": 128}}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# ---------------------------------------------------------------------------------------------------
# machine


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# the CPU instructions that decide fp32 against bf16 speed (cssl_bench.train.precision reads the first two)
CPU_FLAGS = ("amx_bf16", "avx512_bf16", "amx_tile", "avx512f", "avx2")


def cpu_flags() -> dict[str, bool]:
    """Which of ``CPU_FLAGS`` the CPU has (``/proc/cpuinfo``; torch's capabilities elsewhere)."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return {f: f in have for f in CPU_FLAGS}
    except OSError:
        pass
    caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    return {f: bool(caps.get(f)) for f in CPU_FLAGS}


def explain_precision(requested: str, device_type: str) -> tuple[str, str]:
    """(the precision ``requested`` stands for on ``device_type``, why): ``auto`` as the training loop resolves it."""
    if requested != "auto":
        return requested, "requested"
    return explain_auto(device_type)


def machine(device: torch.device) -> dict:
    d = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": "cpu" if device.type == "cpu" else torch.cuda.get_device_name(device),
    }
    d["cpu_flags"] = cpu_flags()
    if hasattr(os, "getloadavg"):
        d["load_average_at_start"] = round(os.getloadavg()[0], 2)  # the CPU may be shared: a noise indicator
    if device.type == "cuda":
        d["cuda"] = torch.version.cuda
        d["gpu_memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
    try:
        import lightly

        d["lightly"] = lightly.__version__
    except ImportError:
        d["lightly"] = None
    return d


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, seconds: float = 2.0) -> float:
    """Best FLOP/s of a square matmul (n = 2048 on CPU, 8192 on GPU) over ``seconds`` of timed loops."""
    n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    best, t_end = 0.0, time.perf_counter() + seconds
    reps = 20 if device.type == "cuda" else 2
    while time.perf_counter() < t_end:
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync(device)
        best = max(best, reps * 2 * n**3 / (time.perf_counter() - t))
    return best


# ---------------------------------------------------------------------------------------------------
# our step


def recipe_for(method: str, config: str, batch: int, precision: str, channels_last: bool, sets: tuple[str, ...] = ()):
    """The paper recipe with this configuration's backbone, size, batch and precision, then ``sets`` (KEY=VALUE)."""
    backbone, size = CONFIGS[config]
    params = {}
    if method == "swav":
        params = {"freeze_prototypes_epochs": 0, "queue_length": 0}  # prototypes trained, as in lightly's example
    return load_recipe(
        method,
        "paper",
        {
            "model": {"backbone": backbone, "channels_last": channels_last},
            "data": {"image_size": size},
            "params": params,
            "train": {"batch_size": batch, "precision": precision},
        },
        list(sets),
    )


def synthetic_views(recipe, batch: int, device: torch.device, channels_last: bool) -> dict[str, torch.Tensor]:
    """Normalised random views with the view recipe's names and sizes: {name: [B, 3, h, w]}."""
    size = recipe.data.image_size
    img = torch.zeros(3, size, size, dtype=torch.uint8)
    shapes, _ = build_view_recipe(recipe)(img, np.random.default_rng(0))
    g = torch.Generator().manual_seed(0)
    out = {}
    for name in sorted(shapes):
        x = torch.randn(batch, 3, *shapes[name].shape[-2:], generator=g).to(device)
        out[name] = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    return out


def our_step(recipe, device: torch.device, views: dict[str, torch.Tensor], compile_: bool = False, epoch: int = 1):
    """The loop's step of ``recipe``'s method on the fixed batch ``views`` ({name: normalised [B, 3, h, w]})."""
    precision = recipe.train.precision
    torch.manual_seed(0)
    method = build_method(recipe).to(device)
    if recipe.model.channels_last:
        method = method.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(method, recipe)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    model = torch.compile(method) if compile_ else method
    batch = next(iter(views.values())).shape[0]
    labels = torch.zeros(batch, dtype=torch.long, device=device)
    method.train()

    def step():
        with autocast(precision, device.type):
            out = model(views, labels)
        loss = out["loss"]
        if not torch.isfinite(loss.detach()):  # the loop's guard (a device sync)
            raise FloatingPointError(f"{recipe.method}: non-finite loss")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        method.after_backward(epoch)
        scaler.step(optimizer)
        scaler.update()
        pairs = method.momentum_pairs
        if pairs:
            update_momentum_pairs(pairs, method.momentum(0.5))

    return step


def ours(
    method_name: str,
    config: str,
    batch: int,
    precision: str,
    channels_last: bool,
    device: torch.device,
    compile_: bool,
    sets: tuple[str, ...] = (),
):
    """(step function, views) of our implementation: the loop's step on one batch."""
    recipe = recipe_for(method_name, config, batch, precision, channels_last, sets)
    views = synthetic_views(recipe, batch, device, channels_last)
    return our_step(recipe, device, views, compile_), views


# ---------------------------------------------------------------------------------------------------
# lightly's step (its examples/pytorch/*.py, with our recipe's widths and optimiser)


def lightly_available() -> bool:
    try:
        import lightly  # noqa: F401
    except ImportError:
        return False
    return True


def _lightly_model(method_name: str, recipe, backbone: nn.Module):
    from lightly.loss import NegativeCosineSimilarity, NTXentLoss, SwaVLoss
    from lightly.models.modules import (
        BYOLPredictionHead,
        BYOLProjectionHead,
        MoCoProjectionHead,
        SimCLRProjectionHead,
        SimSiamPredictionHead,
        SimSiamProjectionHead,
        SwaVProjectionHead,
        SwaVPrototypes,
    )
    from lightly.models.utils import deactivate_requires_grad, update_momentum

    p, feat = dataclasses.asdict(build_method(recipe).p), backbone.out_dim  # the recipe's params with their defaults

    class SimCLR(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = backbone
            self.projection_head = SimCLRProjectionHead(feat, p["hidden"], p["dim"], num_layers=p["proj_layers"])
            self.criterion = NTXentLoss(temperature=p["temperature"])

        def training_loss(self, views, progress):
            z0 = self.projection_head(self.backbone(views["v1"]))
            z1 = self.projection_head(self.backbone(views["v2"]))
            return self.criterion(z0, z1)

    class MoCo(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = backbone
            # head_bn (the CPU recipes): lightly's batch_norm also normalises the output layer (MoCo v3's head)
            self.projection_head = MoCoProjectionHead(
                feat, p["mlp_hidden"], p["dim"], batch_norm=bool(p.get("head_bn", False))
            )
            self.backbone_momentum = copy.deepcopy(self.backbone)
            self.projection_head_momentum = copy.deepcopy(self.projection_head)
            deactivate_requires_grad(self.backbone_momentum)
            deactivate_requires_grad(self.projection_head_momentum)
            self.criterion = NTXentLoss(temperature=p["temperature"], memory_bank_size=(p["queue_size"], p["dim"]))

        def training_loss(self, views, progress):
            update_momentum(self.backbone, self.backbone_momentum, m=p["momentum"])
            update_momentum(self.projection_head, self.projection_head_momentum, m=p["momentum"])
            query = self.projection_head(self.backbone(views["v1"]))
            with torch.no_grad():
                key = self.projection_head_momentum(self.backbone_momentum(views["v2"])).detach()
            return self.criterion(query, key)

    class BYOL(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = backbone
            self.projection_head = BYOLProjectionHead(feat, p["hidden"], p["dim"])
            self.prediction_head = BYOLPredictionHead(p["dim"], p["hidden"], p["dim"])
            self.backbone_momentum = copy.deepcopy(self.backbone)
            self.projection_head_momentum = copy.deepcopy(self.projection_head)
            deactivate_requires_grad(self.backbone_momentum)
            deactivate_requires_grad(self.projection_head_momentum)
            self.criterion = NegativeCosineSimilarity()

        def training_loss(self, views, progress):
            from lightly.utils.scheduler import cosine_schedule

            m = cosine_schedule(int(progress * 100), 100, p["tau_base"], 1)
            update_momentum(self.backbone, self.backbone_momentum, m=m)
            update_momentum(self.projection_head, self.projection_head_momentum, m=m)
            p0 = self.prediction_head(self.projection_head(self.backbone(views["v1"])))
            p1 = self.prediction_head(self.projection_head(self.backbone(views["v2"])))
            with torch.no_grad():
                z0 = self.projection_head_momentum(self.backbone_momentum(views["v1"])).detach()
                z1 = self.projection_head_momentum(self.backbone_momentum(views["v2"])).detach()
            return 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))

    class SimSiam(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = backbone
            self.projection_head = SimSiamProjectionHead(feat, feat, p["dim"])
            self.prediction_head = SimSiamPredictionHead(p["dim"], p["pred_hidden"], p["dim"])
            self.criterion = NegativeCosineSimilarity()

        def training_loss(self, views, progress):
            z0 = self.projection_head(self.backbone(views["v1"]))
            z1 = self.projection_head(self.backbone(views["v2"]))
            p0, p1 = self.prediction_head(z0), self.prediction_head(z1)
            return 0.5 * (self.criterion(z0.detach(), p1) + self.criterion(z1.detach(), p0))

    class SwaV(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = backbone
            self.projection_head = SwaVProjectionHead(feat, p["hidden"], p["dim"])
            self.prototypes = SwaVPrototypes(
                p["dim"], n_prototypes=p["n_prototypes"], n_steps_frozen_prototypes=p["freeze_prototypes_epochs"]
            )
            self.epoch = 0  # frozen prototypes count epochs, as ours (set by the caller)
            self.criterion = SwaVLoss(
                temperature=p["temperature"],
                sinkhorn_iterations=p["sinkhorn_iterations"],
                sinkhorn_epsilon=p["epsilon"],
            )

        def training_loss(self, views, progress):
            self.prototypes.normalize()
            large = sorted((k for k in views if k.startswith("g")), key=lambda k: int(k[1:]))
            small = sorted((k for k in views if k.startswith("l")), key=lambda k: int(k[1:]))
            out = [
                self.prototypes(F.normalize(self.projection_head(self.backbone(views[k])), dim=1), step=self.epoch)
                for k in large + small
            ]
            return self.criterion(out[: len(large)], out[len(large) :])

    classes = {"simclr": SimCLR, "moco": MoCo, "byol": BYOL, "simsiam": SimSiam, "swav": SwaV}
    from cssl_bench.methods import implementation

    impl = implementation(recipe)
    return classes[impl]() if impl in classes else None


def build_lightly(recipe, device: torch.device):
    """(model, optimizer) of lightly's implementation of ``recipe`` around our backbone module (same widths,
    loss, optimiser class, memory format), or None when lightly has no such method. ``model.training_loss(views,
    progress)`` takes our view names ({v1, v2} or {g0.., l0..}) and the training progress in [0, 1]."""
    from lightly.utils.lars import LARS

    torch.manual_seed(0)
    m = recipe.model
    backbone = build_backbone(m.backbone, recipe.data.image_size, m.cifar_stem, m.zero_init_residual)
    model = _lightly_model(recipe.method, recipe, backbone)
    if model is None:
        return None
    model = model.to(device)
    if m.channels_last:
        model = model.to(memory_format=torch.channels_last)
    o, params = recipe.optim, [q for q in model.parameters() if q.requires_grad]
    if o.name == "lars":
        optimizer = LARS(
            params, lr=recipe.lr, momentum=o.momentum, weight_decay=o.weight_decay, trust_coefficient=o.lars_trust
        )
    else:
        optimizer = torch.optim.SGD(params, lr=recipe.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    return model, optimizer


def lightly_step(
    method_name: str,
    config: str,
    batch: int,
    precision: str,
    channels_last: bool,
    device: torch.device,
    compile_: bool,
    sets: tuple[str, ...] = (),
):
    """(step function, views) of lightly's implementation, or None when lightly has no such method."""
    recipe = recipe_for(method_name, config, batch, precision, channels_last, sets)
    built = build_lightly(recipe, device)
    if built is None:
        return None
    model, optimizer = built
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    views = synthetic_views(recipe, batch, device, channels_last)
    loss_fn = torch.compile(model.training_loss) if compile_ else model.training_loss
    model.train()

    def step():
        with autocast(precision, device.type):
            loss = loss_fn(views, 0.5)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return step, views


# ---------------------------------------------------------------------------------------------------
# measurement


def write_json(path: Path, info: dict) -> None:
    """The benchmark's record, written atomically, and where it went (stderr)."""
    atomic_write_text(path, json.dumps(info, indent=1) + "\n")
    print(f"wrote {path}", file=sys.stderr)


def count_flops(step) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def timed(step, steps: int, device: torch.device) -> float:
    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - t) / steps


def measure(method: str, config: str, args, device: torch.device, peaks: dict, use_lightly: bool) -> dict:
    batch = args.batch or BATCH["cuda" if device.type == "cuda" else "cpu"][config]
    row = {
        "method": method,
        "config": config,
        "backbone": CONFIGS[config][0],
        "image_size": CONFIGS[config][1],
        "batch": batch,
        "precision": args.precision,
        "channels_last": args.channels_last,
        "compile": args.compile,
    }
    sets = tuple(args.sets)
    recipe_step = None  # MoCo/LooC with --bn-splits: ours at the recipe's shuffling-BN groups, timed beside
    if args.bn_splits is not None:
        recipe_splits = recipe_for(method, config, batch, args.precision, args.channels_last, sets).params.get(
            "bn_splits"
        )
        if recipe_splits is not None:
            row["bn_splits"], row["recipe_bn_splits"] = args.bn_splits, recipe_splits
            if recipe_splits != args.bn_splits:
                recipe_step, _ = ours(
                    method, config, batch, args.precision, args.channels_last, device, args.compile, sets
                )
            sets = (*sets, f"params.bn_splits={args.bn_splits}")
    step, views = ours(method, config, batch, args.precision, args.channels_last, device, args.compile, sets)
    row["views"] = {k: list(v.shape[-2:]) for k, v in views.items()}
    other = None
    if use_lightly:
        built = lightly_step(
            method, config, batch, args.precision, args.channels_last, device, args.compile, tuple(args.sets)
        )
        other = built[0] if built else None
        row["lightly"] = "n/a (no lightly implementation)" if built is None else "measured"
    else:
        row["lightly"] = "lightly not installed" if not lightly_available() else "skipped (--no-lightly)"
    for _ in range(args.warmup):  # first steps: allocator, oneDNN/cuDNN kernel selection, compilation
        step()
        if other:
            other()
        if recipe_step:
            recipe_step()
    row["flops_per_step"] = count_flops(step)
    if other:
        row["lightly_flops_per_step"] = count_flops(other)
    ours_s, theirs_s, recipe_s, round_peaks = [], [], [], []
    dtype = DTYPES[args.precision]
    for _ in range(args.rounds):  # alternate, so that a neighbour's load hits both sides alike
        # the peak is re-measured next to each timed round: on a shared CPU it drifts with the load
        round_peaks.append(matmul_peak(device, dtype, seconds=args.peak_seconds))
        ours_s.append(timed(step, args.steps, device))
        if other:
            theirs_s.append(timed(other, args.steps, device))
        if recipe_step:
            recipe_s.append(timed(recipe_step, args.steps, device))
    t = statistics.median(ours_s)
    peaks[args.precision] = max(peaks[args.precision], *round_peaks)
    row["step_s"] = [round(x, 5) for x in ours_s]
    row["round_peak_tflops"] = [round(x / 1e12, 5) for x in round_peaks]
    row["images_per_s"] = batch / t
    row["tflops"] = row["flops_per_step"] / t / 1e12
    row["fraction_of_peak"] = statistics.median([row["flops_per_step"] / s / pk for s, pk in zip(ours_s, round_peaks)])
    if other:
        row["lightly_step_s"] = [round(x, 5) for x in theirs_s]
        row["lightly_images_per_s"] = batch / statistics.median(theirs_s)
        row["ratio_ours_over_lightly"] = statistics.median([b / a for a, b in zip(ours_s, theirs_s)])
    if recipe_s:  # the emulated shuffling BN's cost: our step at the recipe's groups over ours at --bn-splits
        row["recipe_bn_step_s"] = [round(x, 5) for x in recipe_s]
        row["recipe_bn_images_per_s"] = batch / statistics.median(recipe_s)
        row["shuffle_bn_cost"] = statistics.median([r / a for a, r in zip(ours_s, recipe_s)])
        if theirs_s:
            row["recipe_bn_ratio_ours_over_lightly"] = statistics.median([b / r for r, b in zip(recipe_s, theirs_s)])
    del step, other, recipe_step
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def print_table(rows: list[dict], info: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(
        title=f"training step, {info['machine']['device']} ({info['machine']['cpu']}), {info['precision']}"
        f"{', channels-last' if info['channels_last'] else ''}{', compiled' if info['compile'] else ''}"
    )
    unit, scale = ("TFLOP/s", 1e12) if max(info["matmul_peak_tflops"].values()) >= 1 else ("GFLOP/s", 1e9)
    for col in ("method", "config", "batch", "img/s", unit, "of peak", "lightly img/s", "ours/lightly"):
        t.add_column(col, justify="left" if col in ("method", "config") else "right")
    for r in rows:
        lightly_ips = f"{r['lightly_images_per_s']:.1f}" if "lightly_images_per_s" in r else r["lightly"]
        ratio = f"{r['ratio_ours_over_lightly']:.2f}" if "ratio_ours_over_lightly" in r else "-"
        t.add_row(
            r["method"] + (f" (bn_splits={r['bn_splits']})" if "bn_splits" in r else ""),
            r["config"],
            str(r["batch"]),
            f"{r['images_per_s']:.1f}",
            f"{r['tflops'] * 1e12 / scale:.3g}",
            f"{100 * r['fraction_of_peak']:.0f}%",
            lightly_ips,
            ratio,
        )
    Console(width=max(120, Console().width)).print(t)
    peaks = ", ".join(f"{k} {v * 1e12 / scale:.3g}" for k, v in info["matmul_peak_tflops"].items())
    console = Console(width=max(120, Console().width))
    console.print(
        f"matmul peak ({unit}, best seen): {peaks}; 'of peak': the step's FLOP/s over the peak of its compute dtype "
        "measured next to each timed round (median over rounds)"
    )
    for r in rows:
        if "shuffle_bn_cost" in r:
            vs = (
                f"; ours/lightly with it {r['recipe_bn_ratio_ours_over_lightly']:.2f}"
                if "recipe_bn_ratio_ours_over_lightly" in r
                else ""
            )
            console.print(
                f"{r['method']} {r['config']}: the emulated shuffling BN ({r['recipe_bn_splits']} groups, the recipe's) "
                f"makes our step {r['shuffle_bn_cost']:.2f}x as long as with bn_splits={r['bn_splits']} "
                f"({r['recipe_bn_images_per_s']:.1f} against {r['images_per_s']:.1f} img/s){vs}"
            )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument(
        "--precision",
        default="fp32",
        choices=[*DTYPES, "auto"],
        help="autocast dtype; auto: bf16 where the device computes it fast (CPU: AMX-BF16/AVX512-BF16), else fp32",
    )
    ap.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=False)
    ap.add_argument("--compile", action="store_true", help="torch.compile both steps (slow to start on CPUs)")
    ap.add_argument(
        "--configs",
        default=None,
        help=f"comma-separated subset of {', '.join(CONFIGS)} (default: all; --quick: r18-32)",
    )
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods (recipe names)")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default: per configuration and device)")
    ap.add_argument("--steps", type=int, default=None, help="steps per timed round (default 2 on CPU, 20 on GPU)")
    ap.add_argument(
        "--rounds", type=int, default=None, help="timed rounds, ours and lightly alternating (default 3; --quick: 5)"
    )
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 1 on CPU, 5 on GPU)")
    ap.add_argument(
        "--quick", action="store_true", help="CPU subset: r18-32, batch 16, 1 step x 5 rounds (~3 minutes on 2 cores)"
    )
    ap.add_argument("--no-lightly", action="store_true", help="do not measure lightly")
    ap.add_argument(
        "--peak-seconds",
        type=float,
        default=None,
        help="matmul-peak measurement before each round (default 0.5 s CPU, 0.2 s GPU)",
    )
    ap.add_argument(
        "--split-bn",
        default="auto",
        choices=["auto", "one-call", "per-group", "view"],
        help="MoCo/LooC split BN: the library's choice (auto), always one rearranged call, a call per group "
        "or statistics on a grouped view (SplitBatchNorm2d.PATH)",
    )
    ap.add_argument(
        "--bn-splits",
        type=int,
        default=None,
        metavar="N",
        help="MoCo/LooC: ours with params.bn_splits=N (1: plain BN, lightly's semantics); the recipe's emulated "
        "shuffling BN is timed beside it (alternating) and its cost printed on its own line",
    )
    ap.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="recipe override for both sides (repeatable; lightly's step ignores what it does not use)",
    )
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args(argv)
    SplitBatchNorm2d.PATH = args.split_bn  # "auto": the library's own choice
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    if args.bn_splits is not None and args.bn_splits < 1:
        print(f"error: --bn-splits must be >= 1, got {args.bn_splits}", file=sys.stderr)
        return 2
    precision_requested = args.precision
    args.precision, precision_why = explain_precision(args.precision, device.type)
    gpu = device.type == "cuda"
    if gpu:
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels (as the loop does)
    if args.quick:
        args.configs = args.configs or "r18-32"
        args.batch = args.batch or 16
        args.steps = args.steps or 1
        args.rounds = args.rounds or 5
    args.rounds = args.rounds or 3
    args.steps = args.steps or (20 if gpu else 2)
    args.warmup = args.warmup if args.warmup is not None else (5 if gpu else 1)
    args.peak_seconds = args.peak_seconds if args.peak_seconds is not None else (0.2 if gpu else 0.5)
    configs = (args.configs or ",".join(CONFIGS)).split(",")
    methods = args.methods.split(",")
    for c in configs:
        if c not in CONFIGS:
            print(f"error: unknown config {c!r}; choose from {', '.join(CONFIGS)}", file=sys.stderr)
            return 2
    use_lightly = not args.no_lightly and lightly_available()
    if not args.no_lightly and not use_lightly:
        print("lightly not installed: measuring ours only ('make bench' installs it)", file=sys.stderr)

    peaks = {"fp32": matmul_peak(device, torch.float32)}
    if args.precision != "fp32":
        peaks[args.precision] = matmul_peak(device, DTYPES[args.precision])
    info = {
        "benchmark": "train_step",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(device),
        "precision": args.precision,
        "precision_requested": precision_requested,
        "precision_why": precision_why,
        "channels_last": args.channels_last,
        "compile": args.compile,
        "split_bn": args.split_bn,
        "bn_splits": args.bn_splits,
        "sets": args.sets,
        "matmul_peak_tflops": {k: v / 1e12 for k, v in peaks.items()},
        "steps_per_round": args.steps,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "quick": args.quick,
        "command": " ".join(["python", "benchmarks/train_step.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    rows = []
    for config in configs:
        for method in methods:
            print(f"{method} {config} ...", file=sys.stderr, flush=True)
            rows.append(measure(method, config, args, device, peaks, use_lightly))
    info["rows"] = rows
    info["matmul_peak_tflops"] = {k: v / 1e12 for k, v in peaks.items()}  # the best seen over the run
    print_table(rows, info)
    name = (
        f"train_step-{'cuda' if gpu else 'cpu'}-{args.precision}{'-cl' if args.channels_last else ''}"
        f"{'-compiled' if args.compile else ''}{'' if args.split_bn == 'auto' else '-splitbn-' + args.split_bn}"
        f"{'' if args.bn_splits is None else f'-bn{args.bn_splits}'}"
        f"{'-set' if args.sets else ''}{'-quick' if args.quick else ''}.json"
    )
    write_json(args.out / name, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
