"""Where a training step's time goes: torch.profiler over the steps of ``train_step.py`` (ours or lightly's).

Builds the same step as ``benchmarks/train_step.py`` (synthetic views on the device, the paper recipe with a
configuration's backbone, size and batch, plus ``--set KEY=VALUE`` recipe overrides), runs warm-up steps,
then profiles ``--steps`` steps and prints the operators with the most self time on the device (the GPU's
kernels; on a CPU the operators' self CPU time), with the step's wall time and how busy the device was.

    python benchmarks/profile_step.py moco-v2 --device cuda --precision bf16 --channels-last --config r50-224
    python benchmarks/profile_step.py moco-v2 --lightly ...          # the same step built from lightly
    python benchmarks/profile_step.py moco-v2 --set params.bn_splits=1 ...   # plain BN

Writes ``benchmarks/results/profile-METHOD-DEVICE-PRECISION[-lightly][-LABEL].json`` (``--out``, ``--label``):
the arguments, the machine, step wall times and the top operators (name, calls per step, self time per step).
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402
from train_step import BATCH, CONFIGS, lightly_step, machine, ours, sync, write_json  # noqa: E402

from cssl_bench.nn.norm import SplitBatchNorm2d  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("method", help="recipe name (simclr, moco-v2, byol, simsiam, swav, looc)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=False)
    ap.add_argument("--config", default="r18-32", choices=list(CONFIGS))
    ap.add_argument("--batch", type=int, default=None, help="batch size (default: train_step.py's for the config)")
    ap.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="recipe override (repeatable)"
    )
    ap.add_argument("--lightly", action="store_true", help="profile lightly's step instead of ours")
    ap.add_argument(
        "--split-bn",
        default="auto",
        choices=["auto", "one-call", "per-group", "view"],
        help="SplitBatchNorm2d's path (as train_step.py --split-bn)",
    )
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 1 CPU, 5 GPU)")
    ap.add_argument("--steps", type=int, default=None, help="profiled steps (default 2 CPU, 5 GPU)")
    ap.add_argument("--top", type=int, default=25, help="operators to print and record")
    ap.add_argument("--label", default="", help="suffix of the JSON file name")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    if gpu and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    SplitBatchNorm2d.PATH = args.split_bn  # "auto": the library's own choice
    if gpu:
        torch.backends.cudnn.benchmark = True
    warmup = args.warmup if args.warmup is not None else (5 if gpu else 1)
    steps = args.steps or (5 if gpu else 2)
    batch = args.batch or BATCH["cuda" if gpu else "cpu"][args.config]
    build = lightly_step if args.lightly else ours
    built = build(args.method, args.config, batch, args.precision, args.channels_last, device, False, tuple(args.sets))
    if built is None:
        print(f"error: lightly has no {args.method}", file=sys.stderr)
        return 2
    step = built[0]
    for _ in range(warmup):
        step()
    sync(device)
    walls = []
    for _ in range(steps):  # unprofiled timing first: the profiler's own overhead is not in these
        t = time.perf_counter()
        step()
        sync(device)
        walls.append(time.perf_counter() - t)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        sync(device)
    key = "self_device_time_total" if gpu else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, key) > 0]
    events.sort(key=lambda e: getattr(e, key), reverse=True)
    total = sum(getattr(e, key) for e in events) / steps / 1e3  # ms of device (or CPU) self time per step
    wall = statistics.median(walls) * 1e3  # as ratio_bound.py reads step_ms
    rows = [
        {"name": e.key, "calls_per_step": e.count / steps, "self_ms_per_step": getattr(e, key) / steps / 1e3}
        for e in events[: args.top]
    ]
    side = "lightly" if args.lightly else "ours"
    print(
        f"{side} {args.method} {args.config} batch {batch} {args.precision}{' channels-last' if args.channels_last else ''}"
        f"{' ' + ' '.join(args.sets) if args.sets else ''}: step {wall:.1f} ms (median of {steps}, unprofiled), "
        f"{batch / wall * 1e3:.0f} img/s; {'device' if gpu else 'CPU'} self time {total:.1f} ms/step "
        f"({100 * total / wall:.0f}% of the wall time)"
    )
    print(f"{'self ms/step':>12} {'calls/step':>10}  operator")
    for r in rows:
        print(f"{r['self_ms_per_step']:12.2f} {r['calls_per_step']:10.1f}  {r['name'][:100]}")
    info = {
        "benchmark": "profile_step",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(device),
        "side": side,
        "method": args.method,
        "config": args.config,
        "batch": batch,
        "precision": args.precision,
        "channels_last": args.channels_last,
        "sets": args.sets,
        "split_bn": args.split_bn,
        "steps": steps,
        "warmup": warmup,
        "step_ms": [round(w * 1e3, 3) for w in walls],
        "self_ms_per_step_total": total,
        "top": rows,
        "command": " ".join(
            ["python", f"benchmarks/{Path(sys.argv[0]).name}", *(argv if argv is not None else sys.argv[1:])]
        ),
    }
    name = (
        f"profile-{args.method}-{device.type}-{args.precision}{'-lightly' if args.lightly else ''}"
        f"{'-' + args.label if args.label else ''}.json"
    )
    write_json(args.out / name, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
