"""Whole-epoch training throughput, the way a user feels it: ours (the pretraining loop with the torchvision
loader and with the FFCV loader) against lightly's documented pipeline (https://github.com/lightly-ai/lightly),
same data, backbone module, batch, precision, loader workers and threads.

One measurement is one training run of ``--warmup`` + ``--steps`` optimiser steps (or ``--epochs`` whole
epochs) from a fresh model and a fresh loader; images/s are counted from the end of the warm-up steps (worker
start-up, FFCV's JIT load, oneDNN/cuDNN kernel selection excluded) to the end of the run, so a step's time holds
the wait for its batch, the host-to-device copy, forward, loss, backward, optimiser and momentum update.

- **ours**: ``cssl_bench.train.loop.pretrain`` itself (``stop_after_steps``), timed from its own ``log.csv``
  (``elapsed_s`` at the warm-up's last step and at the last step; 0.1 s resolution, so use enough steps for a
  few seconds). ``data.loader`` is ``torchvision`` (a DataLoader of per-image views, ``cssl_bench.data.loaders``)
  or ``ffcv`` (the ``.beton`` and batched views of ``cssl_bench.data.ffcv_loader``; written and JIT-loaded once,
  before the rounds). What the run actually used is read back from its ``run.json``.
- **lightly**: its examples' loop (``examples/pytorch/*.py``): a ``torch.utils.data.DataLoader`` (shuffle,
  drop_last, the same number of workers) over a torchvision dataset of the same images (the embedded images as
  PIL images, as ``torchvision.datasets.CIFAR10`` serves them; an image folder through
  ``torchvision.datasets.ImageFolder``) with the method's lightly transform (``SimCLRTransform``,
  ``MoCoV2Transform``, ``BYOLTransform``, ``SimSiamTransform``, ``SwaVTransform``), and the lightly model of
  ``benchmarks/train_step.py`` (lightly's heads, losses and momentum utilities) around our backbone module, so
  only the pipeline differs. The transform's parameters are read from our view recipe (crop size and scale,
  flip, jitter strengths and probabilities, grey, blur, solarisation); what lightly cannot express is listed in
  the record (``transform_differences``). LooC has no lightly counterpart: ours only.

Sides are measured in alternating order within each round (ours torchvision, ours FFCV, lightly, then
reversed), so a neighbour's load on a shared machine hits them alike; images/s and ours/lightly are medians
over rounds (the ratio: median of the per-round ratios).

``--breakdown`` (default on) also times, in every round, each side's loader alone (batches drawn and made
ready for the step, no training) and the training step alone (ours, the same for both our loaders, and
lightly's; one fixed batch), over ``--breakdown-steps`` batches each; lightly's whole-epoch run also records
the share of its time spent waiting for batches. The whole-epoch rate cannot exceed the slower of loader and
step when loading overlaps the step (workers on other cores), so ``bound`` = our step alone / lightly's whole
epoch is the ratio a free loader would give us.

    python benchmarks/pipeline.py --methods simclr --warmup 4 --steps 12 --merge   # one method, 3 rounds, both loaders
    python benchmarks/pipeline.py --methods simclr,moco-v2 --steps 40 --rounds 3 --loader ffcv
    python benchmarks/pipeline.py --scale small --epochs 1 --no-breakdown
    python benchmarks/pipeline.py --jpeg-folder /tmp/jpeg224 --images 4096 --backbone resnet50 --image-size 224 \\
        --batch 128 --workers 12 --precision auto --loader ffcv      # GPU (benchmarks/gpu_checks.sh)

``--precision auto`` resolves as the training loop does (bf16 on a GPU with native bf16 or a CPU with AMX-BF16 /
AVX512-BF16, else fp32); the record holds the requested and resolved precision and the CPU's flags. ``--threads``
sets torch's threads in the training process (default 1: the CPU is shared); loader workers are processes
(torchvision, lightly) or threads (FFCV). Writes ``benchmarks/results/pipeline-DEVICE-PRECISION-SCALE.json``
(``--json``) after every method, so a run cut short keeps what it measured; ``--merge`` keeps the other methods'
rows of an earlier run in that file (each row records its own command, date and load average). On 2 shared
cores one method of the tiny scale takes 3-8 minutes (3 rounds of 16 steps, all sides, breakdown included).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import importlib.metadata
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path.home() / ".cache" / "cssl_bench" / "numba"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import (  # noqa: E402
    build_lightly,
    explain_precision,
    lightly_available,
    machine,
    our_step,
    sync,
    timed,
    write_json,
)

from cssl_bench import UserError  # noqa: E402
from cssl_bench.config import load_recipe  # noqa: E402
from cssl_bench.data.augment import (  # noqa: E402
    Blur,
    ColorJitter,
    HFlip,
    MultiCrop,
    ResizedCrop,
    Solarize,
    TwoViews,
)
from cssl_bench.data.datasets import get_source  # noqa: E402
from cssl_bench.data.loader_base import to_input  # noqa: E402
from cssl_bench.data.sources import ArraySource, DatasetOptions, FolderSource  # noqa: E402
from cssl_bench.data.train_loader import make_train_loader  # noqa: E402
from cssl_bench.data.views import build_view_recipe  # noqa: E402
from cssl_bench.methods import implementation  # noqa: E402
from cssl_bench.train.loop import autocast, pretrain  # noqa: E402

METHODS = ["simclr", "moco-v2", "byol", "simsiam", "swav", "looc"]
RESULTS = Path(__file__).resolve().parent / "results"


# ---------------------------------------------------------------------------------------------------
# recipes


def recipe_of(method: str, args, loader: str = "torchvision"):
    """The ``--scale`` recipe of ``method`` with this run's overrides (loader, precision, batch, workers, ...)."""
    ov: dict = {
        "data": {"loader": loader},
        "train": {"precision": args.precision, "checkpoint_every": 0},
    }
    if args.batch:
        ov["train"]["batch_size"] = args.batch
    if args.workers is not None:
        ov["data"]["workers"] = args.workers
    if args.dataset:
        ov["data"]["dataset"] = args.dataset
    if args.image_size:
        ov["data"]["image_size"] = args.image_size
    if args.backbone:
        ov["model"] = {"backbone": args.backbone}
    if args.epochs:
        ov["train"]["epochs"] = args.epochs
    return load_recipe(method, args.scale, ov, list(args.sets))


# ---------------------------------------------------------------------------------------------------
# lightly's pipeline


def _pipeline_kwargs(steps, differences: list[str], where: str) -> dict:
    """lightly view-transform arguments equal to one of our view pipelines (crop, flip, jitter, grey, blur,
    solarise). What lightly's transform cannot express is appended to ``differences``."""
    kw: dict = {"hf_prob": 0.0, "cj_prob": 0.0, "random_gray_scale": 0.0, "gaussian_blur": 0.0}
    for s in steps:
        if isinstance(s, ResizedCrop):
            kw.update(input_size=s.size, min_scale=float(s.scale[0]), max_scale=float(s.scale[1]))
            if tuple(s.ratio) != (3 / 4, 4 / 3):
                differences.append(f"{where}: crop aspect ratios {s.ratio} (lightly: 3/4..4/3)")
        elif isinstance(s, HFlip):
            kw["hf_prob"] = s.p
        elif isinstance(s, ColorJitter):
            kw.update(
                cj_prob=s.p,
                cj_strength=1.0,
                cj_bright=s.brightness,
                cj_contrast=s.contrast,
                cj_sat=s.saturation,
                cj_hue=s.hue,
                random_gray_scale=s.p_gray,
            )
            if s.gray_first:
                differences.append(f"{where}: grey before the jitter (lightly: after)")
        elif isinstance(s, Blur):
            kw.update(gaussian_blur=s.p, sigmas=tuple(s.sigma))
            if s.p > 0:
                differences.append(f"{where}: blur kernel (ours ~10% of the side; lightly PIL radius = sigma)")
        elif isinstance(s, Solarize):
            kw["solarization_prob"] = s.p
        else:
            raise UserError(f"{where}: lightly's transforms have no {type(s).__name__}")
    return kw


def _pop_solarize(kw: dict, differences: list[str], where: str) -> dict:
    p = kw.pop("solarization_prob", 0.0)
    if p > 0:
        differences.append(f"{where}: solarisation p={p} (this lightly transform has none)")
    return kw


def _pop_max_scale(kw: dict, differences: list[str], where: str) -> dict:
    m = kw.pop("max_scale", 1.0)
    if m != 1.0:
        differences.append(f"{where}: crop scale up to {m} (lightly: 1.0)")
    return kw


def lightly_transform(recipe) -> tuple[object, list[str], list[str]]:
    """(lightly's transform of ``recipe``'s method with our view recipe's parameters, our names of the views it
    returns in order, the differences it cannot express). Raises ``UserError`` when lightly has none."""
    import lightly.transforms as LT

    ours = build_view_recipe(recipe)
    impl, diff = implementation(recipe), []
    two = {"simclr": LT.SimCLRTransform, "moco": LT.MoCoV2Transform, "simsiam": LT.SimSiamTransform}
    if impl in two and type(ours) is TwoViews:
        k1 = _pipeline_kwargs(ours.first.steps, diff, "view 1")
        k2 = _pipeline_kwargs(ours.second.steps, diff, "view 2")
        if k1 != k2:
            diff.append(f"the two views differ ({k1} / {k2}); lightly's {two[impl].__name__} uses view 1's for both")
        k1 = _pop_max_scale(_pop_solarize(k1, diff, "view 1"), diff, "view 1")
        return two[impl](**k1), ["v1", "v2"], diff
    if impl == "byol" and type(ours) is TwoViews:
        k1 = _pop_max_scale(_pipeline_kwargs(ours.first.steps, diff, "view 1"), diff, "view 1")
        k2 = _pop_max_scale(_pipeline_kwargs(ours.second.steps, diff, "view 2"), diff, "view 2")
        k1.setdefault("solarization_prob", 0.0)
        k2.setdefault("solarization_prob", 0.0)
        t = LT.BYOLTransform(view_1_transform=LT.BYOLView1Transform(**k1), view_2_transform=LT.BYOLView2Transform(**k2))
        return t, ["v1", "v2"], diff
    if impl == "swav" and type(ours) is MultiCrop:
        g = _pop_solarize(_pipeline_kwargs(ours.large.steps, diff, "large crops"), diff, "large crops")
        s = _pop_solarize(_pipeline_kwargs(ours.small.steps, diff, "small crops"), diff, "small crops")
        rest = {k: v for k, v in g.items() if k not in ("input_size", "min_scale", "max_scale")}
        if rest != {k: v for k, v in s.items() if k not in ("input_size", "min_scale", "max_scale")}:
            diff.append("large and small crops differ beyond size and scale; lightly's SwaVTransform uses the large's")
        t = LT.SwaVTransform(
            crop_sizes=(g["input_size"], s["input_size"]),
            crop_counts=(ours.n_large, ours.n_small),
            crop_min_scales=(g["min_scale"], s["min_scale"]),
            crop_max_scales=(g["max_scale"], s["max_scale"]),
            **rest,
        )
        names = [f"g{i}" for i in range(ours.n_large)] + [f"l{i}" for i in range(ours.n_small)]
        return t, names, diff
    raise UserError(f"lightly has no pipeline for {recipe.method} ({type(ours).__name__} views)")


class PILImages(torch.utils.data.Dataset):
    """``(transform(PIL image), label)`` of an in-memory array of HWC uint8 images, as torchvision's CIFAR10."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


class SourceImages(torch.utils.data.Dataset):
    """``(transform(PIL image), label)`` of any ``ImageSource`` (its uint8 [3, H, W] tensors as PIL images)."""

    def __init__(self, source, transform):
        self.source, self.transform = source, transform

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i):
        from PIL import Image

        img, y = self.source[i]
        return self.transform(Image.fromarray(img.permute(1, 2, 0).numpy())), int(y)


def lightly_dataset(source, transform):
    """The torchvision dataset a lightly user writes for these images."""
    if isinstance(source, FolderSource):
        import torchvision

        return torchvision.datasets.ImageFolder(str(source.root), transform=transform)
    if isinstance(source, ArraySource):
        return PILImages(source.images, source.labels, transform)
    return SourceImages(source, transform)


def lightly_loader(dataset, recipe, seed: int):
    w = recipe.data.workers
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=recipe.train.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=w,
        generator=torch.Generator().manual_seed(seed),
    )


def _to_device(batch_views, names, device, channels_last: bool) -> dict[str, torch.Tensor]:
    out = {}
    for name, v in zip(names, batch_views):
        v = v.to(device, non_blocking=True)
        out[name] = v.contiguous(memory_format=torch.channels_last) if channels_last else v
    return out


def run_lightly(recipe, dataset, names, device, warmup: int, steps: int | None, epochs: int | None, seed: int):
    """One lightly training run: (images/s after the warm-up, steps timed, the share of the timed window spent
    waiting for the next batch)."""
    model, optimizer = build_lightly(recipe, device)
    model.train()
    loader = lightly_loader(dataset, recipe, seed)
    total = warmup + steps if steps else epochs * len(loader)
    cl, precision, step, t0, wait = recipe.model.channels_last, recipe.train.precision, 0, None, 0.0
    for epoch in range(math.ceil(total / len(loader))):
        model.epoch = epoch  # SwAV's frozen prototypes count epochs
        it = iter(loader)
        while step < total:
            t = time.perf_counter()
            batch = next(it, None)
            if batch is None:
                break
            if t0 is not None:
                wait += time.perf_counter() - t
            views = _to_device(batch[0], names, device, cl)
            with autocast(precision, device.type):
                loss = model.training_loss(views, step / total)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step == warmup:
                sync(device)
                t0 = time.perf_counter()
        del it
    sync(device)
    n, dt = step - warmup, time.perf_counter() - t0
    return n * recipe.train.batch_size / dt, n, wait / dt


# ---------------------------------------------------------------------------------------------------
# ours


def run_ours(recipe, root: Path, warmup: int, steps: int | None, device) -> tuple[float, int, list]:
    """One run of the pretraining loop: (images/s after the warm-up, steps timed, loaders it used)."""
    out = Path(tempfile.mkdtemp(prefix="run-", dir=root))
    try:
        pretrain(recipe, out, show_progress=False, stop_after_steps=(warmup + steps) if steps else None)
        with open(out / "log.csv", newline="") as f:
            rows = [(int(r["step"]), float(r["elapsed_s"])) for r in csv.DictReader(f)]
        info = json.loads((out / "run.json").read_text())
    finally:
        shutil.rmtree(out, ignore_errors=True)
    start = next((r for r in rows if r[0] == warmup), None)
    if start is None or rows[-1][0] <= warmup:
        raise RuntimeError(f"log.csv of {recipe.method} has no row at step {warmup} and after: {rows[:3]}...")
    n = rows[-1][0] - start[0]
    return n * recipe.train.batch_size / (rows[-1][1] - start[1]), n, info.get("train_loaders", [])


def ours_first_batch(recipe, source, device):
    """(the loader's first batch as the loop feeds it to the method, the loader's provenance)."""
    loader = make_train_loader(recipe, source, build_view_recipe(recipe), 0)
    views, _, _ = next(iter(loader))
    cl = recipe.model.channels_last
    return {k: to_input(v.to(device), cl) for k, v in views.items()}, loader.provenance


# ---------------------------------------------------------------------------------------------------
# breakdown: loader alone, step alone


def loader_rate(make_iter, n: int, batch: int, device) -> float:
    """Images/s of ``n`` batches (after the first) of a fresh loader, each made ready for the step."""
    it = make_iter()
    next(it)
    t = time.perf_counter()
    for _ in range(n):
        next(it)
    sync(device)
    return n * batch / (time.perf_counter() - t)


def ours_loader_iter(recipe, source, device):
    def make():
        loader = make_train_loader(recipe, source, build_view_recipe(recipe), 0)
        cl = recipe.model.channels_last
        return ({k: to_input(v.to(device, non_blocking=True), cl) for k, v in b[0].items()} for b in loader)

    return make


def lightly_loader_iter(recipe, dataset, names, device, seed):
    def make():
        loader = lightly_loader(dataset, recipe, seed)
        return (_to_device(b[0], names, device, recipe.model.channels_last) for b in loader)

    return make


def lightly_fixed_step(recipe, views, device):
    model, optimizer = build_lightly(recipe, device)
    model.train()

    def step():
        with autocast(recipe.train.precision, device.type):
            loss = model.training_loss(views, 0.5)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


# ---------------------------------------------------------------------------------------------------
# one method


def measure(method: str, args, device, root: Path) -> dict:
    sides = {"torchvision": ["ours-torchvision"], "ffcv": ["ours-ffcv"], "both": ["ours-torchvision", "ours-ffcv"]}
    sides = list(sides[args.loader])
    base = recipe_of(method, args)
    row: dict = {
        "method": method,
        "backbone": base.model.backbone,
        "image_size": base.data.image_size,
        "dataset": base.data.dataset,
        "batch": base.train.batch_size,
        "precision": base.train.precision,
        "channels_last": base.model.channels_last,
        "workers": base.data.workers,
        "bn_splits": base.params.get("bn_splits"),
    }
    size = base.data.image_size
    probe = build_view_recipe(base)(torch.zeros(3, size, size, dtype=torch.uint8), np.random.default_rng(0))[0]
    row["views"] = {k: list(v.shape[-2:]) for k, v in probe.items()}
    source = get_source(base.data.dataset, "train", DatasetOptions.from_recipe(base.data))
    recipes = {"ours-torchvision": base, "ours-ffcv": recipe_of(method, args, "ffcv")}
    fixed = {}  # side -> fixed batch for the step-alone timing
    if "ours-ffcv" in sides:  # write the .beton and load the JIT kernels once, before any timing
        t = time.perf_counter()
        views, prov = ours_first_batch(recipes["ours-ffcv"], source, device)
        row["ffcv_prepare_s"] = round(time.perf_counter() - t, 1)
        if prov.get("loader") != "ffcv":
            row["ours-ffcv"] = f"unavailable (the loader fell back to {prov.get('loader')}: ffcv not installed?)"
            sides.remove("ours-ffcv")
        else:
            fixed["ours-ffcv"] = views
    if "ours-torchvision" in sides and args.breakdown:
        fixed["ours-torchvision"] = ours_first_batch(base, source, device)[0]
    dataset = names = None
    if args.lightly:
        try:
            transform, names, row["transform_differences"] = lightly_transform(base)
            row["lightly_transform"] = type(transform).__name__
            dataset = lightly_dataset(source, transform)
            sides.append("lightly")
            if args.breakdown:
                first = next(iter(lightly_loader(dataset, base, args.seed)))[0]
                fixed["lightly"] = _to_device(first, names, device, base.model.channels_last)
        except UserError as e:
            row["lightly"] = f"n/a ({e})"
    per: dict[str, dict[str, list]] = {s: {"images_per_s": [], "loader_images_per_s": []} for s in sides}
    steps_alone: dict[str, list] = {"ours": [], "lightly": []}  # our two loaders feed the same step
    ours_fixed = fixed.get("ours-ffcv", fixed.get("ours-torchvision"))
    batch = base.train.batch_size
    for r in range(args.rounds):
        order = sides if r % 2 == 0 else sides[::-1]
        for side in order:
            print(f"  {method} round {r + 1}/{args.rounds}: {side}", file=sys.stderr, flush=True)
            if side == "lightly":
                ips, n, wait = run_lightly(
                    base, dataset, names, device, args.warmup, args.steps, args.epochs, args.seed + r
                )
                per[side].setdefault("data_wait_share", []).append(round(wait, 3))
            else:
                ips, n, used = run_ours(recipes[side], root, args.warmup, args.steps, device)
                row.setdefault(f"{side}_loader_used", used)
            per[side]["images_per_s"].append(round(ips, 2))
            row["steps_timed"] = n
            if args.breakdown:
                if side == "lightly":
                    make = lightly_loader_iter(base, dataset, names, device, args.seed + r)
                else:
                    make = ours_loader_iter(recipes[side], source, device)
                rate = loader_rate(make, args.breakdown_steps, batch, device)
                per[side]["loader_images_per_s"].append(round(rate, 2))
        if args.breakdown:  # each step alone on one fixed batch, in the round's order
            for who in ("ours", "lightly") if r % 2 == 0 else ("lightly", "ours"):
                if who == "lightly" and "lightly" not in per:
                    continue
                if who == "ours" and ours_fixed is None:
                    continue
                if who == "ours":
                    step = our_step(
                        recipes["ours-ffcv" if "ours-ffcv" in fixed else "ours-torchvision"], device, ours_fixed
                    )
                else:
                    step = lightly_fixed_step(base, fixed["lightly"], device)
                step()  # warm-up: allocator, kernel selection
                steps_alone[who].append(round(batch / timed(step, args.breakdown_steps, device), 2))
                del step
    for side, d in per.items():
        row[side] = {k: v for k, v in d.items() if v}
        row[side]["median_images_per_s"] = statistics.median(d["images_per_s"])
        if args.breakdown:
            row[side]["median_loader_images_per_s"] = statistics.median(d["loader_images_per_s"])
    for who, v in steps_alone.items():
        if v:
            row[f"{who}_step_alone"] = {"images_per_s": v, "median_images_per_s": statistics.median(v)}
    if "lightly" in per:
        theirs = per["lightly"]["images_per_s"]
        for side in [s for s in per if s != "lightly"]:
            ours_ = per[side]["images_per_s"]
            row[f"ratio_{side}_over_lightly"] = round(statistics.median([a / b for a, b in zip(ours_, theirs)]), 3)
        if steps_alone["ours"] and steps_alone["lightly"]:
            # the most our whole epoch could reach with a free, fully overlapped loader: our step alone
            row["bound_ours_over_lightly"] = round(
                statistics.median([a / b for a, b in zip(steps_alone["ours"], theirs)]), 3
            )
            row["step_ratio_ours_over_lightly"] = round(
                statistics.median([a / b for a, b in zip(steps_alone["ours"], steps_alone["lightly"])]), 3
            )
    return row


# ---------------------------------------------------------------------------------------------------
# output


def print_table(rows: list[dict], info: dict) -> None:
    print(
        f"\nwhole-epoch images/s, {info['machine']['device']} ({info['machine']['cpu']}), {info['precision']}, "
        f"scale {info['scale']}, {info['machine']['torch_threads']} thread(s), medians of {info['rounds']} rounds"
    )
    sides = ("ours-torchvision", "ours-ffcv", "lightly")
    head = "| method | batch | " + " | ".join(sides) + " | tv/lightly | ffcv/lightly |"
    if info["breakdown"]:
        head += " loader alone (tv / ffcv / lightly) | step alone (ours / lightly) | bound |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))

    def num(r, *keys):
        for k in keys:
            r = r.get(k) if isinstance(r, dict) else None
        return "-" if r is None else f"{r:.0f}"

    for r in rows:
        cell = [num(r, s, "median_images_per_s") for s in sides]
        ratio = [
            f"{r[k]:.2f}" if k in r else "-"
            for k in ("ratio_ours-torchvision_over_lightly", "ratio_ours-ffcv_over_lightly")
        ]
        line = f"| {r['method']} | {r['batch']} | " + " | ".join(cell) + " | " + " | ".join(ratio) + " |"
        if info["breakdown"]:
            ld = " / ".join(num(r, s, "median_loader_images_per_s") for s in sides)
            st = " / ".join(num(r, f"{w}_step_alone", "median_images_per_s") for w in ("ours", "lightly"))
            b = r.get("bound_ours_over_lightly")
            line += f" {ld} | {st} | {'-' if b is None else f'{b:.2f}'} |"
        print(line)
    if info["breakdown"]:
        print(
            "bound: our step alone over lightly's whole epoch (median of rounds), the ratio a free loader that "
            "overlaps the step would give"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods (recipe names)")
    ap.add_argument("--scale", default="tiny", choices=("tiny", "small"))
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--steps", type=int, default=None, help="timed steps per measurement (default 15; a partial epoch)")
    g.add_argument("--epochs", type=int, default=None, help="whole epochs per measurement (the warm-up steps untimed)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed first steps of every measurement (default 5)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    ap.add_argument("--loader", default="both", choices=("torchvision", "ffcv", "both"), help="our loader(s)")
    ap.add_argument("--precision", default="auto", choices=("fp32", "bf16", "auto"))
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the training process (default 1)")
    ap.add_argument("--workers", type=int, default=None, help="loader workers, both sides (default: the recipe's)")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default: the recipe's)")
    ap.add_argument("--backbone", default=None, help="backbone (default: the scale's, resnet18-w0.25)")
    ap.add_argument("--image-size", type=int, default=None, help="view size (default: the scale's, 32)")
    ap.add_argument("--dataset", default=None, help="dataset (default: the scale's embedded images)")
    ap.add_argument(
        "--jpeg-folder",
        type=Path,
        default=None,
        help="generate (once) a class folder of --images 256x320 JPEG photos-like images here (benchmarks/loaders.py) "
        "and train on it (imagefolder:DIR/nIMAGES/images224/train)",
    )
    ap.add_argument("--images", type=int, default=4096, help="images in --jpeg-folder (default 4096)")
    ap.add_argument("--breakdown", action=argparse.BooleanOptionalAction, default=True, help="loader and step alone")
    ap.add_argument("--breakdown-steps", type=int, default=4, help="batches for each breakdown timing (default 4)")
    ap.add_argument("--no-lightly", dest="lightly", action="store_false", help="measure ours only")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="recipe override (repeatable)"
    )
    ap.add_argument(
        "--json", type=Path, default=None, help="default: benchmarks/results/pipeline-DEVICE-PRECISION-SCALE.json"
    )
    ap.add_argument(
        "--merge",
        action="store_true",
        help="keep the rows of other methods already in --json (runs of a few methods each, one file)",
    )
    args = ap.parse_args(argv)
    if args.steps is None and args.epochs is None:
        args.steps = 15
    if args.warmup < 1 or (args.steps is not None and args.steps < 1) or (args.epochs is not None and args.epochs < 1):
        print("error: --warmup, --steps and --epochs must be >= 1", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the loop does
    precision, why = explain_precision(args.precision, device.type)
    requested, args.precision = args.precision, precision
    if args.jpeg_folder is not None:
        from loaders import make_folder

        folder = make_folder(args.jpeg_folder / f"n{args.images}", 224, args.images)
        args.dataset = f"imagefolder:{folder}"
    if args.lightly and not lightly_available():
        print("lightly not installed: measuring ours only (pip install lightly, or the bench extra)", file=sys.stderr)
        args.lightly = False
    # log every gcd(warm-up, steps) steps: the loop logs the warm-up's last step and the run's last
    log_every = math.gcd(args.warmup, args.steps) if args.steps else args.warmup
    args.sets = [*args.sets, f"train.log_every={log_every}"]
    methods = [m for m in args.methods.split(",") if m]
    info = {
        "benchmark": "pipeline",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(device),
        "cpu_shared": "the CPU is shared with other processes (see load averages): each training process uses "
        f"{args.threads} torch thread(s), loader workers are separate processes (torchvision, lightly) or threads (FFCV)",
        "scale": args.scale,
        "precision": precision,
        "precision_requested": requested,
        "precision_why": why,
        "loader": args.loader,
        "warmup_steps": args.warmup,
        "steps": args.steps,
        "epochs": args.epochs,
        "partial_epoch": args.steps is not None,
        "rounds": args.rounds,
        "breakdown": args.breakdown,
        "breakdown_steps": args.breakdown_steps,
        "sets": args.sets,
        "command": " ".join(["python", "benchmarks/pipeline.py", *(argv if argv is not None else sys.argv[1:])]),
        "rows": [],
    }
    try:  # the installed distribution's version (importing ffcv takes seconds, and its __version__ lags)
        info["machine"]["ffcv"] = importlib.metadata.version("ffcv")
    except importlib.metadata.PackageNotFoundError:
        info["machine"]["ffcv"] = None
    name = f"pipeline-{device.type}-{precision}-{args.scale}{'-jpeg224' if args.jpeg_folder else ''}.json"
    out = args.json or RESULTS / name
    kept = []
    if args.merge and out.is_file():  # rows of other methods from earlier runs, each with its own date and command
        earlier = json.loads(out.read_text())
        kept = [dict(r, run=r.get("run") or earlier.get("command")) for r in earlier.get("rows", [])]
        kept = [r for r in kept if r["method"] not in methods]
    root, measured = Path(tempfile.mkdtemp(prefix="cssl-pipeline-")), []
    try:
        for method in methods:
            print(f"{method} ...", file=sys.stderr, flush=True)
            load0, t = (os.getloadavg()[0] if hasattr(os, "getloadavg") else None), time.perf_counter()
            row = measure(method, args, device, root)
            row.update(date=info["date"], run=info["command"], minutes=round((time.perf_counter() - t) / 60, 1))
            if load0 is not None:  # the CPU is shared: how busy it was around this method's measurements
                row["load_average"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
            measured.append(row)
            info["rows"] = kept + measured
            write_json(out, info)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print_table(info["rows"], info)
    print(f"(json: {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
