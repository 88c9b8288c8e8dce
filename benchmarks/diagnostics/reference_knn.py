"""Cross-check of our method implementations against lightly's, trained identically: kNN top-1 after a run.

For each method, three backbones are probed with the same kNN (k 200, T 0.1, backbone features, the
embedded train split as the memory, its test split as the queries):

- **random init**: the recipe's backbone as initialised (seed of the recipe);
- **ours**: ``cssl_bench.train.loop.pretrain`` with our method;
- **lightly**: the same ``pretrain`` call (same recipe, data loader and augmentations, optimiser, learning-rate
  schedule, epochs, seed and backbone initialisation) with the method's model and loss built from lightly
  (the modules of ``benchmarks/train_step.py``, after lightly's examples; the momentum update is lightly's
  ``update_momentum`` inside its step, BYOL's tau follows lightly's ``cosine_schedule``).

If our implementation were wrong where lightly's is right, the two kNN columns would differ beyond the
seed-to-seed spread; if both stay below random init, the recipe (not the implementation) is what does
not learn at that scale. lightly is installed by ``make bench`` only.

    python benchmarks/diagnostics/reference_knn.py --out /tmp/refknn                  # moco-v2, byol, simsiam, swav at tiny scale
    python benchmarks/diagnostics/reference_knn.py --out /tmp/refknn moco-v2 --set train.epochs=8

Prints a table and writes ``benchmarks/results/diagnostics/reference_knn-SCALE.json`` (``--json``) with every row and the
machine description.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: train_step.py

import train_step

from cssl_bench.config import load_recipe
from cssl_bench.data.datasets import get_source
from cssl_bench.eval.features import compute_features
from cssl_bench.eval.knn import knn_eval
from cssl_bench.methods import build_method, implementation
from cssl_bench.methods.base import Method
from cssl_bench.train import loop
from cssl_bench.train.checkpoint import atomic_write_text, load_checkpoint
from cssl_bench.train.loop import (
    dataset_options,
    pretrain,
    seed_everything,
    steps_per_epoch,
)

METHODS = ["moco-v2", "byol", "simsiam", "swav"]


class LightlyMethod(Method):
    """Our ``Method`` interface around lightly's model of the same method, sharing our backbone module."""

    def __init__(self, recipe, num_classes: int = 10):
        super().__init__(recipe)
        self.ref = train_step._lightly_model(recipe.method, recipe, self.backbone)
        if self.ref is None:
            raise SystemExit(f"lightly has no implementation of {recipe.method}")
        n = len(get_source(recipe.data.dataset, "train", dataset_options(recipe)))
        self.total = max(recipe.train.epochs * steps_per_epoch(n, recipe.train.batch_size, 1), 1)
        self.steps = 0

    def loss(self, views, labels):
        out = self.ref.training_loss(views, min(self.steps / self.total, 1.0))
        self.steps += 1
        return {"loss": out}


def knn_of(method: torch.nn.Module, recipe) -> float:
    opts = dataset_options(recipe)
    f = {}
    for split in ("train", "test"):
        f[split] = compute_features(
            method, get_source("embedded", split, opts), "backbone", recipe.data.image_size, recipe.model.channels_last
        )
    return knn_eval(f["train"][0], f["train"][1], f["test"][0], f["test"][1], k=200, temperature=0.1)["knn/top1"]


def run(name: str, recipe, out: Path, use_lightly: bool) -> float:
    if use_lightly:
        original = loop.build_method
        loop.build_method = lambda r, num_classes=10: LightlyMethod(r, num_classes)
        try:
            pretrain(recipe, out, show_progress=False)
        finally:
            loop.build_method = original
        model = LightlyMethod(recipe)
    else:
        pretrain(recipe, out, show_progress=False)
        model = build_method(recipe)
    model.load_state_dict(load_checkpoint(out / "checkpoints" / "last.pt")["model"])
    return knn_of(model.eval(), recipe)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("methods", nargs="*", default=METHODS)
    ap.add_argument("--out", type=Path, required=True, help="folder for the runs")
    ap.add_argument("--scale", default="tiny")
    ap.add_argument(
        "--set", action="append", default=[], help="recipe override (as cssl-bench pretrain --set), repeatable"
    )
    ap.add_argument(
        "--json", type=Path, default=None, help="default: benchmarks/results/diagnostics/reference_knn-SCALE.json"
    )
    args = ap.parse_args()
    if not train_step.lightly_available():
        raise SystemExit("lightly is not installed: run 'make bench' (or pip install lightly)")
    rows = []
    for name in args.methods:
        recipe = load_recipe(name, args.scale, {}, list(args.set))
        seed_everything(recipe.train.seed)
        init = knn_of(build_method(recipe).eval(), recipe)
        row = {
            "method": name,
            "implementation": implementation(recipe),
            "scale": args.scale,
            "overrides": args.set,
            "epochs": recipe.train.epochs,
            "batch": recipe.train.batch_size,
            "seed": recipe.train.seed,
            "knn_random_init": init,
        }
        for label, flag in (("ours", False), ("lightly", True)):
            t = time.time()
            d = args.out / f"{name.replace('+', 'p')}-{label}"
            if d.exists():
                shutil.rmtree(d)
            row[f"knn_{label}"] = run(name, recipe, d, flag)
            row[f"wall_s_{label}"] = round(time.time() - t, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| method | epochs x batch | kNN random init | kNN ours | kNN lightly |\n|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['method']} | {r['epochs']} x {r['batch']} | {r['knn_random_init']:.1f} | {r['knn_ours']:.1f} | {r['knn_lightly']:.1f} |"
        )
    path = (
        args.json
        or Path(__file__).resolve().parents[1] / "results" / "diagnostics" / f"reference_knn-{args.scale}.json"
    )
    info = {
        "date": datetime.date.today().isoformat(),
        "command": " ".join(sys.argv),
        "machine": train_step.machine(torch.device("cpu")),
        "rows": rows,
    }
    atomic_write_text(path, json.dumps(info, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
