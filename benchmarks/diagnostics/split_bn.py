"""SplitBatchNorm2d's three computations against each other and against plain BN, layer by layer.

For each activation shape (ResNet-18 CIFAR stem at 32 px and ResNet-50 at 224 px, batch 16 in 8 groups by
default, and the CPU recipes' batch 128 in 4 groups), times forward + in-place ReLU + backward of: ``one-call``
(the batch rearranged so that one BN call normalises every group), ``per-group`` (a BN call per contiguous
group), ``view`` (per-group statistics on a view of the batch, no copy, no BN call) and ``plain`` (one
ordinary BN over the whole batch: the cost floor, other numerics). ``auto`` is what ``SplitBatchNorm2d.path``
picks for that shape on that device. Channels-last, fp32 (``--dtype bf16`` on a GPU). Prints a table, writes JSON.

    python benchmarks/diagnostics/split_bn.py                                  # CPU
    python benchmarks/diagnostics/split_bn.py --device cuda --dtype bf16       # GPU
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: train_step.py

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from train_step import sync, write_json  # noqa: E402

from cssl_bench.nn.norm import SplitBatchNorm2d  # noqa: E402

# (label, N, C, H, W, groups)
SHAPES = [
    ("r18-32 stem", 16, 64, 32, 32, 8),
    ("r18-32 layer2", 16, 128, 16, 16, 8),
    ("r18-32 layer3", 16, 256, 8, 8, 8),
    ("r18-32 layer4", 16, 512, 4, 4, 8),
    ("r50-224 layer1", 16, 256, 56, 56, 8),
    ("r50-224 layer2", 16, 512, 28, 28, 8),
    ("r50-224 layer3", 16, 1024, 14, 14, 8),
    ("r50-224 layer4", 16, 2048, 7, 7, 8),
    ("w0.25 stem, b128/4", 128, 16, 32, 32, 4),
    ("w0.25 layer2, b128/4", 128, 32, 16, 16, 4),
    ("w0.25 layer3, b128/4", 128, 64, 8, 8, 4),
    ("w0.25 layer4, b128/4", 128, 128, 4, 4, 4),
]
PATHS = ["one-call", "per-group", "view"]  # SplitBatchNorm2d.PATH values
GPU_BATCH = 128  # on a GPU the shapes' batch is scaled to the GPU benchmark's (8 groups of 16)


def time_it(fn, device, reps: int) -> float:
    fn()
    sync(device)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        sync(device)
        best = min(best, (time.perf_counter() - t) / reps)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--reps", type=int, default=None, help="calls per timing (default 5 CPU, 50 GPU); best of 3")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "results" / "diagnostics")
    a = ap.parse_args()
    device = torch.device(a.device)
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    reps = a.reps or (50 if device.type == "cuda" else 5)
    rows = []
    for label, n, c, h, w, s in SHAPES:
        if device.type == "cuda" and n == 16:
            n = GPU_BATCH
        x = (
            torch.randn(n, c, h, w, device=device, dtype=dtype)
            .contiguous(memory_format=torch.channels_last)
            .requires_grad_()
        )
        g = torch.randn_like(x)
        bn = SplitBatchNorm2d(c, s).to(device)

        def run(mode, x=x, g=g, bn=bn):
            if mode == "plain":
                y = F.batch_norm(x, None, None, bn.weight, bn.bias, True)
            else:
                y = bn(x)
            y.relu_()
            y.backward(g)

        times = {}
        for mode in PATHS + ["plain"]:
            bn.PATH = "one-call" if mode == "plain" else mode
            times[mode] = time_it(lambda mode=mode: run(mode), device, reps) * 1e3
        del bn.PATH  # back to the class's choice
        auto = bn.path(x)
        rows.append(
            {
                "layer": label,
                "shape": [n, c, h, w],
                "groups": s,
                "elements_per_group": x.numel() // s,
                "ms": {k: round(v, 3) for k, v in times.items()},
                "auto": auto,
                "auto_is_fastest": times[auto] <= min(times[p] for p in PATHS) * 1.05,
            }
        )
    print(
        "| layer | shape | groups | elements/group | "
        + " | ".join(f"{p} ms" for p in PATHS)
        + " | plain BN ms | auto | auto within 5% of best |"
    )
    print("|---|---|---|---|" + "---|" * len(PATHS) + "---|---|---|")
    for r in rows:
        t = r["ms"]
        print(
            f"| {r['layer']} | {'x'.join(map(str, r['shape']))} | {r['groups']} | {r['elements_per_group']} | "
            + " | ".join(str(t[p]) for p in PATHS)
            + f" | {t['plain']} | {r['auto']} | {'yes' if r['auto_is_fastest'] else 'no'} |"
        )
    info = {
        "benchmark": "split_bn",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        },
        "dtype": a.dtype,
        "reps": reps,
        "command": " ".join(["python", "benchmarks/diagnostics/split_bn.py", *sys.argv[1:]]),
        "rows": rows,
    }
    path = a.out / f"split_bn-{a.device}-{a.dtype}.json"
    write_json(path, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
