"""Loader throughput: the FFCV path vs the torchvision path, images/s and views/s.

Configurations: view size 32, 64 and 224 px; two views (SimCLR/MoCo v2 augmentation) and LooC's
leave-one-out views with 3 atomic augmentations (colour, rotation, texture: 5 views per image);
``--workers`` loader workers (processes for torchvision, threads for FFCV; default 2).

Data, written once under ``--data`` (default: a temporary folder):
- 32 and 64 px: the embedded dataset exported as an image folder of PNGs (``cssl-bench data export``),
- 224 px: JPEG photos-like images of 256x320 (the embedded shapes upscaled, with sensor-like noise),
read by the torchvision path from the files (``FolderSource``: PIL decode per image), and by the
FFCV path from a ``.beton`` of the same folder (JPEG quality 90, ``cssl-bench data convert``).

Each run is timed from its first batch (worker start-up and JIT load excluded) for at most
``--seconds``. The ratio column divides images/s by the training step's consumption rate
(``--consume``: images/s of the step on this machine; ``--measure-step`` measures it for
resnet18-w0.25 at 32 px with two views, batch 64). Prints a markdown table and writes
``benchmarks/results/loaders.json``. The CPU may be shared: numbers are noisy.

    python benchmarks/loaders.py                     # everything, ~5-10 minutes on 2 cores
    python benchmarks/loaders.py --sizes 64 --recipes two --seconds 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from cssl_bench.data import embedded  # noqa: E402
from cssl_bench.data.augment import (  # noqa: E402
    Blur,
    ColorJitter,
    HFlip,
    LeaveOneOut,
    Pipeline,
    ResizedCrop,
    Rotation,
    Texture,
    TwoViews,
    ssl_pipeline,
)
from cssl_bench.data.datasets import FolderSource  # noqa: E402
from cssl_bench.data.loaders import train_loader  # noqa: E402
from cssl_bench.train.checkpoint import atomic_write_text  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def recipes(size: int) -> dict:
    return {
        "two": TwoViews(ssl_pipeline(size, blur_p=0.5), ssl_pipeline(size, blur_p=0.5)),
        "looc3": LeaveOneOut(
            Pipeline([ResizedCrop(size), HFlip()]), [ColorJitter(), Rotation(), Texture()], Pipeline([Blur(p=0.5)])
        ),
    }


def make_folder(root: Path, size: int, n: int) -> Path:
    """An image folder for view size ``size`` (see the module docstring); written once."""
    out = root / f"images{size}"
    if (out / ".done").exists():
        return out / "train"
    if size <= 64:
        embedded.export_imagefolder(embedded.EmbeddedSpec(size, n, 10, 0), out, "label")
        out = out / "train"
    else:
        data = embedded.load(embedded.EmbeddedSpec(64, n, 10, 0))["train"]
        rng = np.random.default_rng(0)
        for i, (im, y) in enumerate(zip(data["images"], data["label"])):
            big = np.asarray(Image.fromarray(im).resize((320, 256), Image.BICUBIC), np.float32)
            big = np.clip(big + rng.normal(0, 12, big.shape), 0, 255).astype(np.uint8)
            d = out / "train" / embedded.CLASSES[int(y)]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(big).save(d / f"{i:05d}.jpg", quality=90)
        out = out / "train"
    (out.parent / ".done").write_text("ok")
    return out


def time_loader(loader, seconds: float, batch: int) -> tuple[float, int]:
    """(images/s, images timed) from the first batch on, for at most ``seconds``."""
    it = iter(loader)
    next(it)  # start-up (worker processes, JIT load) is not timed
    t0, n = time.perf_counter(), 0
    for _ in it:
        n += batch
        if time.perf_counter() - t0 > seconds:
            break
    dt = time.perf_counter() - t0
    del it
    return (n / dt if n else float("nan")), n


def measure_step(batch: int = 64, steps: int = 6) -> float:
    """Images/s of a two-view training step (resnet18-w0.25, 32 px, CIFAR stem, SGD) on this CPU."""
    from cssl_bench.nn.backbones import build_backbone

    model = build_backbone("resnet18-w0.25", 32).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(2 * batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    for i in range(steps + 1):
        if i == 1:
            t0 = time.perf_counter()
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return batch * steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 224])
    ap.add_argument("--recipes", nargs="+", default=["two", "looc3"])
    ap.add_argument("--loaders", nargs="+", default=["torchvision", "ffcv"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--images", type=int, default=2048, help="images per dataset (224 px: a quarter)")
    ap.add_argument("--seconds", type=float, default=15.0, help="time limit per run")
    ap.add_argument("--data", type=Path, default=None, help="folder for the generated data (kept; default: temporary)")
    ap.add_argument("--consume", type=float, default=400.0, help="training step consumption, images/s")
    ap.add_argument("--measure-step", action="store_true", help="measure --consume here first")
    ap.add_argument("--out", type=Path, default=RESULTS / "loaders.json")
    args = ap.parse_args()

    from cssl_bench.data import ffcv_loader as fl

    if "ffcv" in args.loaders and not fl.ffcv_installed():
        print(f"ffcv is not installed: only the torchvision path is measured ({fl.INSTALL_HINT})", file=sys.stderr)
        args.loaders = [x for x in args.loaders if x != "ffcv"]
    consume = measure_step() if args.measure_step else args.consume
    root = args.data or Path(tempfile.mkdtemp(prefix="cssl-loaders-"))
    rows = []
    for size in args.sizes:
        n = args.images if size <= 64 else max(64, args.images // 4)
        folder = make_folder(root, size, n)
        source = FolderSource(f"bench{size}", folder)
        batch = 64 if size <= 64 else 16
        beton = None
        if "ffcv" in args.loaders:
            beton_path = root / f"images{size}.beton"
            if not beton_path.exists():
                fl.write_beton(
                    source,
                    beton_path,
                    dataset=f"imagefolder:{folder}",
                    split="train",
                    jpeg_quality=90,
                    workers=args.workers,
                )
            beton = fl.open_checked(beton_path, source, f"imagefolder:{folder}", "train")
        for rname in args.recipes:
            recipe = recipes(size)[rname]
            n_views = 2 if rname == "two" else 2 + len(recipe.atomics)
            for lname in args.loaders:
                if lname == "ffcv":
                    loader = fl.FFCVViewLoader(beton, recipe, batch, seed=0, epoch=0, workers=args.workers)
                else:
                    loader = train_loader(source, recipe, batch, seed=0, epoch=0, workers=args.workers)
                ips, timed = time_loader(loader, args.seconds, batch)
                row = {
                    "size": size,
                    "recipe": rname,
                    "loader": lname,
                    "workers": args.workers,
                    "batch": batch,
                    "images_per_s": round(ips, 1),
                    "views_per_s": round(ips * n_views, 1),
                    "images_timed": timed,
                    "vs_train_step": round(ips / consume, 2),
                }
                rows.append(row)
                print(
                    f"{size:>4} px  {rname:<6} {lname:<12} {ips:8.1f} img/s  {ips * n_views:8.1f} views/s",
                    file=sys.stderr,
                    flush=True,
                )
    speedup = {}
    for r in rows:
        if r["loader"] == "ffcv":
            base = next(
                (
                    b
                    for b in rows
                    if b["loader"] == "torchvision" and (b["size"], b["recipe"]) == (r["size"], r["recipe"])
                ),
                None,
            )
            if base:
                speedup[(r["size"], r["recipe"])] = r["images_per_s"] / base["images_per_s"]
    print(f"\n| size | views | loader | images/s | views/s | FFCV / torchvision | / train step ({consume:.0f} img/s) |")
    print("|---:|---|---|---:|---:|---:|---:|")
    for r in rows:
        sp = speedup.get((r["size"], r["recipe"])) if r["loader"] == "ffcv" else None
        print(
            f"| {r['size']} | {r['recipe']} | {r['loader']} | {r['images_per_s']:.0f} | {r['views_per_s']:.0f} | "
            f"{'' if sp is None else f'{sp:.1f}x'} | {r['vs_train_step']:.2f} |"
        )
    report = {
        "benchmark": "loaders",
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "consume_images_per_s": round(consume, 1),
        "consume_measured": args.measure_step,
        "seconds_per_run": args.seconds,
        "rows": rows,
        "ffcv_over_torchvision": {f"{k[0]}/{k[1]}": round(v, 2) for k, v in speedup.items()},
    }
    atomic_write_text(args.out, json.dumps(report, indent=1))
    print(f"\nwrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
