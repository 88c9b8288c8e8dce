"""Tiny-recipe sweep: which CPU-scale settings make a method's kNN beat the random-initialised backbone.

Each configuration pretrains one method (the tiny recipe plus overrides, batch 64, 4 epochs (``--epochs``), a
checkpoint kept after every epoch (``--probe-every``)) through the library's training loop, then probes kNN top-1 on the
embedded test split at every epoch. Configurations run in parallel processes (one thread each, one
loader worker), so a machine with many cores (and a GPU, if there is one) runs a sweep in minutes.
Results are appended as JSON lines; benchmarks/diagnostics/tiny_sweep.md reports the committed ones.

    python benchmarks/diagnostics/tiny_sweep.py --sweep 1 --parallel 12 --out benchmarks/results/diagnostics/tiny_sweep/sweep1.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

H5 = "augment.color={brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.5, p: 0.8, p_gray: 0.2}"  # hue 0.5
S1 = "augment.color={brightness: 0.8, contrast: 0.8, saturation: 0.8, hue: 0.5, p: 0.8, p_gray: 0.2}"  # strength 1, hue 0.5
BYOL_LARS02 = [
    "optim.lars_trust=0.02",
    "optim.base_lr=1.0",
    "optim.weight_decay=1e-5",
]  # solo-learn's CIFAR BYOL optimiser
EPOCHS = 4
SWEEPS = {
    "1": [
        ("init", "moco-v2", ["train.epochs=0"]),
        ("simclr-H5-s0", "simclr", [H5]),
        ("simclr-H5-s1", "simclr", [H5, "train.seed=1"]),
        ("moco-H5-hbn-s0", "moco-v2", [H5, "params.head_bn=true"]),
        ("moco-H5-hbn-s1", "moco-v2", [H5, "params.head_bn=true", "train.seed=1"]),
        ("moco-hbn-s0", "moco-v2", ["params.head_bn=true"]),
        ("moco-S1-hbn-s0", "moco-v2", [S1, "params.head_bn=true"]),
        ("moco-H5-hbn-t01", "moco-v2", [H5, "params.head_bn=true", "params.temperature=0.1"]),
        ("moco-H5-s0", "moco-v2", [H5]),
        ("mocov1-H5-s0", "moco-v1", [H5]),
        ("byol-H5-s0", "byol", [H5]),
        ("byol-H5-sgd", "byol", [H5, "optim.name=sgd", "optim.base_lr=0.3", "optim.weight_decay=1e-5"]),
        ("simsiam-H5-s0", "simsiam", [H5]),
        ("simsiam-H5-lr01", "simsiam", [H5, "optim.base_lr=0.1"]),
        ("simsiamopt-H5", "simsiam-optimal", [H5]),
        ("swav-H5-s0", "swav", [H5]),
        ("looc-H5-hbn", "looc", [H5, "params.head_bn=true"]),
        ("looc-hbn", "looc", ["params.head_bn=true"]),
        ("loocpp-H5-hbn", "looc++", [H5, "params.head_bn=true"]),
        ("mocorot-H5-hbn", "moco-rot", [H5, "params.head_bn=true"]),
        ("mocorotsame-H5-hbn", "moco-rot-same", [H5, "params.head_bn=true"]),
        ("simclr-S1-s0", "simclr", [S1]),
        ("moco-H5-hbn-lr06", "moco-v2", [H5, "params.head_bn=true", "optim.base_lr=0.6"]),
        ("simclr-H5-s2", "simclr", [H5, "train.seed=2"]),
    ],
    "2": [
        ("swav-H5-lr06", "swav", [H5, "optim.base_lr=0.6"]),
        ("swav-H5-ns2-lr06", "swav", [H5, "augment.n_small=2", "optim.base_lr=0.6"]),
        ("moco-H5-bn1", "moco-v2", [H5, "params.bn_splits=1"]),
        ("moco-H5-bn1-hbn", "moco-v2", [H5, "params.bn_splits=1", "params.head_bn=true"]),
        ("moco-H5-sym-hbn", "moco-v2", [H5, "params.symmetric=true", "params.head_bn=true"]),
        ("moco-H5-q1024-hbn", "moco-v2", [H5, "params.queue_size=1024", "params.head_bn=true"]),
        ("moco-H5-m09-hbn", "moco-v2", [H5, "params.momentum=0.9", "params.head_bn=true"]),
        ("moco-H5-bn1-hbn-lr06", "moco-v2", [H5, "params.bn_splits=1", "params.head_bn=true", "optim.base_lr=0.6"]),
        ("byol-H5-sgd-lr06", "byol", [H5, "optim.name=sgd", "optim.base_lr=0.6", "optim.weight_decay=1e-5"]),
        ("simsiam-H5-lr03-wd5e4", "simsiam", [H5, "optim.base_lr=0.3", "optim.weight_decay=5e-4"]),
        ("simsiam-H5-lr06-wd5e4", "simsiam", [H5, "optim.base_lr=0.6", "optim.weight_decay=5e-4"]),
        ("simsiamopt-H5-wd5e4", "simsiam-optimal", [H5, "optim.weight_decay=5e-4"]),
        ("mocov1-H5-bn1", "moco-v1", [H5, "params.bn_splits=1"]),
        ("looc-bn1-hbn", "looc", ["params.bn_splits=1", "params.head_bn=true"]),
        ("mocorot-H5-bn1-hbn", "moco-rot", [H5, "params.bn_splits=1", "params.head_bn=true"]),
        (
            "byol-H5-sgd-tau095",
            "byol",
            [H5, "optim.name=sgd", "optim.base_lr=0.3", "optim.weight_decay=1e-5", "params.tau_base=0.95"],
        ),
        ("moco-H5-bn1-hbn-s1", "moco-v2", [H5, "params.bn_splits=1", "params.head_bn=true", "train.seed=1"]),
        ("simsiam-H5-lr03-wd5e4-s1", "simsiam", [H5, "optim.base_lr=0.3", "optim.weight_decay=5e-4", "train.seed=1"]),
    ],
    # sweep 3 (2-core CPU machine): MoCo v2's queue of stale keys. With lr 0.075 and key momentum 0.99 the
    # encoder moves fast relative to a 64-step queue, so "current vs old encoder" separates keys from the queue.
    "3": [
        ("moco-H5-lr005", "moco-v2", [H5, "optim.base_lr=0.05"]),
        ("moco-H5-m0999", "moco-v2", [H5, "params.momentum=0.999"]),
        ("moco-H5-lr005-m0999", "moco-v2", [H5, "optim.base_lr=0.05", "params.momentum=0.999"]),
        ("moco-H5-q256", "moco-v2", [H5, "params.queue_size=256"]),
        ("moco-H5-wd1e5", "moco-v2", [H5, "optim.weight_decay=1e-5"]),
        ("moco-H5-q64-bn1", "moco-v2", [H5, "params.queue_size=64", "params.bn_splits=1"]),
    ],
    # sweep 4: larger crops. At 32 px a crop of 20% of the image often misses the object, so two views share
    # only the background tint; larger crops keep the shape in both views.
    "4": [
        ("moco-H5-c05", "moco-v2", [H5, "augment.crop_scale=[0.5,1.0]"]),
        ("moco-H5-c05-hbn", "moco-v2", [H5, "augment.crop_scale=[0.5,1.0]", "params.head_bn=true"]),
        (
            "byol-H5-sgd-c05",
            "byol",
            [H5, "optim.name=sgd", "optim.base_lr=0.3", "optim.weight_decay=1e-5", "augment.crop_scale=[0.5,1.0]"],
        ),
        ("simsiam-H5-c05", "simsiam", [H5, "augment.crop_scale=[0.5,1.0]"]),
    ],
    # sweep 5: what separates MoCo from SimCLR here. Key momentum 0 (the key encoder is the query encoder,
    # without gradient) with a one-batch queue and plain BN is SimCLR with stop-gradient keys and a 2-layer head.
    "5": [
        ("moco-H5-m0-q64-bn1", "moco-v2", [H5, "params.momentum=0.0", "params.queue_size=64", "params.bn_splits=1"]),
        (
            "moco-H5-m0-q64-bn1-hbn",
            "moco-v2",
            [H5, "params.momentum=0.0", "params.queue_size=64", "params.bn_splits=1", "params.head_bn=true"],
        ),
        ("simclr-H5-2l", "simclr", ["params.proj_layers=2"]),
        (
            "moco-H5-q64-bn1-hbn-sym",
            "moco-v2",
            [H5, "params.queue_size=64", "params.bn_splits=1", "params.head_bn=true", "params.symmetric=true"],
        ),
    ],
    # sweep 6: confirm sweep 5 (SimCLR's 2-layer projector, MoCo's BN head + symmetric loss) on another seed; the
    # same projector change for SimSiam
    "6": [
        ("simclr-H5-2l-s1", "simclr", ["params.proj_layers=2", "train.seed=1"]),
        ("simsiam-H5-2l", "simsiam", [H5, "params.proj_layers=2"]),
        ("moco-H5-hbn-sym", "moco-v2", [H5, "params.head_bn=true", "params.symmetric=true"]),
        (
            "moco-H5-q64-bn1-hbn-sym-s1",
            "moco-v2",
            [
                H5,
                "params.queue_size=64",
                "params.bn_splits=1",
                "params.head_bn=true",
                "params.symmetric=true",
                "train.seed=1",
            ],
        ),
    ],
    # sweep 7 (lent GPU machine): budget and capacity. The tiny recipes at 20 epochs (5x the sweeps above,
    # 10x the tiny scale) with the quarter-width backbone, and the same with the full-width ResNet-18 (8x the
    # features, 16x the FLOPs): does any method pass random init given more steps or a larger network?
    "7": [
        (
            f"{m}-{w}",
            m,
            (["model.backbone=resnet18"] if w == "w1" else []) + (["train.epochs=0"] if m == "init" else []),
        )
        for w in ("w025", "w1")
        for m in ("init", "simclr", "moco-v2", "byol", "simsiam", "swav")
    ],
    # sweep 8 (2-core CPU machine, bf16 for speed: this CPU has AMX): the tiny recipes for 30 epochs (15x the tiny
    # scale). MoCo's loss rises towards chance (ln 4097 = 8.3) over the 2 tiny epochs while its queue fills with
    # the current encoder's keys, as MoCo's loss does early on ImageNet: does kNN pass random init later?
    "8": [("moco-v2-long", "moco-v2", ["train.precision=bf16"]), ("byol-long", "byol", ["train.precision=bf16"])],
    # sweep 9 (run with --recipe-defaults: the tiny recipes as `cssl-bench pretrain NAME` runs them): the embedded
    # generator's variants. tc: texture contrast (default 0.45; each instance's texture is a fingerprint that
    # survives every augmentation); cc: probability that colour follows class (default 0; in photos it partly does)
    "9": [
        (
            f"{m}-{v}",
            m,
            ["data.embedded_texture_contrast=0.1"] * ("tc" in v)
            + ["data.embedded_class_color=0.5"] * ("cc" in v)
            + (["train.epochs=0"] if m == "init" else []),
        )
        for v in ("tc01", "cc05")
        for m in ("init", "moco-v2", "byol", "simsiam", "swav", "simclr")
    ]
    + [
        (f"simsiam-init-{v}", "simsiam", [s, "train.epochs=0"])  # SimSiam's own random init (zero-init residual)
        for v, s in (("tc01", "data.embedded_texture_contrast=0.1"), ("cc05", "data.embedded_class_color=0.5"))
    ],
    # sweep 10 (--recipe-defaults): one grey background for every image (background_jitter 0: the per-image
    # background level and tint are a continuous instance cue), alone and with the weak texture of sweep 9
    "10": [
        (
            f"{m}-{v}",
            m.replace("-init", ""),
            ["data.embedded_background_jitter=0"]
            + ["data.embedded_texture_contrast=0.1"] * (v == "bj0-tc01")
            + ["train.epochs=0"] * ("init" in m),
        )
        for v in ("bj0", "bj0-tc01")
        for m in ("init", "moco-v2", "byol", "swav", "simsiam-init", "simsiam")
    ],
    # sweep 11: the optimiser settings solo-learn uses on CIFAR (its scripts/pretrain/cifar/*.yaml), a small-data
    # regime, instead of the papers' large-batch ones. LARS there has trust coefficient (eta) 0.02, 20x the papers'
    # 1e-3: our tiny BYOL (lr 0.1 x eta 1e-3) moves each weight by ~1e-4 of its norm a step, 156 steps in all.
    # BYOL: LARS lr 1.0, eta 0.02, wd 1e-5; SwAV: LARS lr 0.6, eta 0.02, wd 1e-6; SimSiam: SGD lr 0.5, wd 1e-5.
    "11": [
        ("byol-lars02", "byol", BYOL_LARS02),
        ("byol-H5-lars02", "byol", [H5, *BYOL_LARS02]),
        (
            "swav-lars02",
            "swav",
            [
                "optim.name=lars",
                "optim.lars_trust=0.02",
                "optim.base_lr=0.6",
                "optim.weight_decay=1e-6",
                "optim.exclude_bn_bias=true",
            ],
        ),
        ("simsiam-lr05-wd1e5", "simsiam", ["optim.base_lr=0.5", "optim.weight_decay=1e-5"]),
        ("simsiam-H5-lr05-wd1e5", "simsiam", [H5, "optim.base_lr=0.5", "optim.weight_decay=1e-5"]),
        (
            "moco-H5-lars02",
            "moco-v2",
            [
                H5,
                "optim.name=lars",
                "optim.lars_trust=0.02",
                "optim.base_lr=0.3",
                "optim.weight_decay=1e-5",
                "optim.exclude_bn_bias=true",
            ],
        ),
    ],
    # sweep 12: BYOL with sweep 11's LARS (the one configuration that rose every epoch) for longer (--epochs 8
    # --probe-every 2), and with larger crops (sweep 4's 0.5-1, which helped BYOL with SGD)
    "12": [
        ("byol-lars02-long", "byol", BYOL_LARS02),
        ("byol-lars02-c05-long", "byol", [*BYOL_LARS02, "augment.crop_scale=[0.5,1.0]"]),
    ],
}


def one(cfg):
    label, method, sets = cfg
    if method == "init":
        method = "moco-v2"
    import torch

    torch.set_num_threads(1)
    from cssl_bench.config import load_recipe
    from cssl_bench.eval.features import load_run
    from cssl_bench.eval.probes import probe_knn
    from cssl_bench.train.loop import pretrain

    root = Path(os.environ["SWEEP_RUNS"]) / label
    t0 = time.time()
    try:
        epochs = int(os.environ.get("SWEEP_EPOCHS", EPOCHS))
        every = int(os.environ.get("SWEEP_PROBE_EVERY", 1))
        probe_at = list(range(every, epochs, every))
        if os.environ.get("SWEEP_RECIPE_DEFAULTS") == "1":  # the recipe's own batch and epochs, probed at the end
            r = load_recipe(method, "tiny", {}, sets)
            probe_at = []
        else:
            r = load_recipe(
                method, "tiny", {"train": {"batch_size": 64, "epochs": epochs, "save_epochs": probe_at}}, sets
            )
        pretrain(r, root, show_progress=False)
        t1 = time.time()
        res = {}
        for ep in [None] if r.train.epochs == 0 else probe_at + [None]:
            recs = probe_knn(load_run(root, ep), "embedded")
            res[str(ep or r.train.epochs)] = round(next(x["value"] for x in recs if x["metric"] == "knn/top1"), 2)
        return {
            "label": label,
            "method": method,
            "sets": sets,
            "batch": r.train.batch_size,
            "knn": res,
            "train_s": round(t1 - t0, 1),
            "total_s": round(time.time() - t0, 1),
        }
    except Exception as e:  # noqa: BLE001 (one failed configuration must not stop the sweep)
        return {"label": label, "error": f"{type(e).__name__}: {e}", "tb": traceback.format_exc()[-1500:]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sweep", choices=sorted(SWEEPS), required=True)
    ap.add_argument("--parallel", type=int, default=2, help="configurations at a time")
    ap.add_argument("--only", default=None, help="comma-separated labels")
    ap.add_argument("--runs", default=os.environ.get("SWEEP_RUNS", "runs/tiny_sweep"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=EPOCHS, help=f"pretraining epochs (default {EPOCHS})")
    ap.add_argument("--probe-every", type=int, default=1, help="kNN probe every this many epochs (and at the end)")
    ap.add_argument(
        "--recipe-defaults",
        action="store_true",
        help="the tiny recipes' own batch and epochs (as `cssl-bench pretrain`), kNN at the end only",
    )
    a = ap.parse_args()
    os.environ["SWEEP_RECIPE_DEFAULTS"] = "1" if a.recipe_defaults else "0"
    os.environ["SWEEP_RUNS"] = a.runs
    os.environ["SWEEP_EPOCHS"], os.environ["SWEEP_PROBE_EVERY"] = str(a.epochs), str(a.probe_every)
    cfgs = [c for c in SWEEPS[a.sweep] if not a.only or c[0] in a.only.split(",")]
    with ProcessPoolExecutor(a.parallel) as ex, open(a.out, "a") as f:
        for fut in as_completed([ex.submit(one, c) for c in cfgs]):
            res = fut.result()
            print(json.dumps(res), flush=True)
            f.write(json.dumps(res) + "\n")
            f.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
