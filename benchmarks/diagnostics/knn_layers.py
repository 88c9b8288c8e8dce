"""Where does a backbone's kNN accuracy come from? Per-stage kNN of a run, with its own BN statistics and
with BN statistics re-estimated on the training images ("precise BN"), plus attribute kNN.

A randomly initialised network evaluates its BN layers with the statistics of initialisation (mean 0,
variance 1): they do not normalise, and the activations grow stage by stage. A trained network's BN layers
normalise with statistics of real batches. To separate what the *weights* carry from that difference, every
BN layer's running statistics are reset and re-estimated as a cumulative average over the training split
(train-mode forward, no gradient, batches of 256), and the kNN is measured again. Features are each stage's
output (``layer1`` ... ``layer4`` of the ResNet), global-average-pooled; kNN is the library's (k 200, T 0.1).
Attribute kNN (embedded datasets): the same features against the images' colour and texture labels.

    python benchmarks/diagnostics/knn_layers.py RUN [RUN ...] --out benchmarks/results/diagnostics/knn_layers.json

A run of ``--epochs 0`` (``cssl-bench pretrain moco-v2 --epochs 0 --out RUN``) is the random-init baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from cssl_bench.data.datasets import get_source  # noqa: E402
from cssl_bench.data.loader_base import to_input  # noqa: E402
from cssl_bench.eval.detection.finetune import precise_bn  # noqa: E402
from cssl_bench.eval.features import dataset_options, load_run  # noqa: E402
from cssl_bench.eval.knn import knn_eval  # noqa: E402
from cssl_bench.train.checkpoint import atomic_write_text  # noqa: E402

STAGES = ("layer1", "layer2", "layer3", "layer4")


def images(src) -> torch.Tensor:
    return torch.stack([src.image(i) for i in range(len(src))])


@torch.no_grad()
def stage_features(
    backbone: nn.Module, x: torch.Tensor, channels_last: bool, batch: int = 500
) -> dict[str, torch.Tensor]:
    out: dict[str, list[torch.Tensor]] = {s: [] for s in STAGES}
    hooks = [
        getattr(backbone, s).register_forward_hook(lambda _m, _i, o, s=s: out[s].append(o.float().mean((2, 3))))
        for s in STAGES
    ]
    try:
        for i in range(0, len(x), batch):
            backbone(to_input(x[i : i + batch], channels_last))
    finally:
        for h in hooks:
            h.remove()
    return {s: torch.cat(v) for s, v in out.items()}


def measure(run_dir: Path, dataset: str) -> dict:
    run = load_run(run_dir)
    cl = run.recipe.model.channels_last
    backbone = run.method.backbone.eval()
    tr, te = (get_source(dataset, split, dataset_options(run.recipe)) for split in ("train", "test"))
    xtr, xte = images(tr), images(te)
    ytr, yte = (torch.as_tensor(np.asarray(s.labels, np.int64)) for s in (tr, te))
    row = {"run": str(run_dir), "method": run.recipe.method, "epochs": run.recipe.train.epochs, "dataset": dataset}
    for tag in ("own_bn", "precise_bn"):
        if tag == "precise_bn":  # every full batch of 256 training images
            batches = [(to_input(xtr[i : i + 256], cl),) for i in range(0, len(xtr) - 255, 256)]
            precise_bn(backbone, iter(batches), len(batches))
            backbone.eval()
        a, b = stage_features(backbone, xtr, cl), stage_features(backbone, xte, cl)
        row[tag] = {s: round(knn_eval(a[s], ytr, b[s], yte, 200, 0.1)["knn/top1"], 2) for s in STAGES}
        for att in ("color", "texture"):
            if att in tr.attributes:
                ta, tb = (torch.as_tensor(np.asarray(s.attributes[att], np.int64)) for s in (tr, te))
                row[tag][att] = round(knn_eval(a["layer4"], ta, b["layer4"], tb, 200, 0.1)["knn/top1"], 2)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--dataset", default="embedded")
    ap.add_argument("--out", type=Path, default=None, help="JSON file for the rows")
    a = ap.parse_args()
    rows = []
    for r in a.runs:
        row = measure(r, a.dataset)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(
        f"\n| run | method | epochs | BN | {' | '.join(STAGES)} | colour | texture |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    for row in rows:
        for tag in ("own_bn", "precise_bn"):
            v = row[tag]
            print(
                f"| {Path(row['run']).name} | {row['method']} | {row['epochs']} | {tag} | "
                + " | ".join(str(v[s]) for s in STAGES)
                + f" | {v.get('color', '-')} | {v.get('texture', '-')} |"
            )
    if a.out:
        atomic_write_text(
            a.out,
            json.dumps(
                {
                    "benchmark": "knn_layers",
                    "rows": rows,
                    "command": " ".join(["python", "benchmarks/diagnostics/knn_layers.py", *sys.argv[1:]]),
                },
                indent=1,
            )
            + "\n",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
