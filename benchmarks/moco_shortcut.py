"""Does a trained MoCo query find *its* key, or only "a key of the current encoder"?

MoCo's negatives come from a queue of keys computed by earlier versions of the key encoder; the MoCo paper
(He et al. 2020, section 3.2 and the momentum ablation) warns that an encoder which changes too fast makes
those keys inconsistent with the current ones, and the loss can then be lowered by telling recent keys from
old ones instead of telling images apart. For each run (the last checkpoint of a MoCo v1/v2 run directory)
this takes one batch of training views (the run's own augmentations, fixed seed), computes the queries and the
shuffled-BN keys as the training step does, and prints:

- the mean cosine of a query with its positive key, with the keys of the *other* images of the same batch,
  and with the run's queue (the last keys it saved);
- how often the positive beats every other key of the batch (instance discrimination; chance = 1/batch),
  how often it beats every queue key (what the training loss rewards), and how often the best *other* key of
  the batch beats every queue key (the shortcut: 1.0 means any current key outranks the whole queue);
- the same instance accuracy with BN on running statistics (no batch statistics shared between the two
  encoders' inputs), and ``z_std`` of the queries (SimSiam's collapse monitor, ``methods.base.output_std``).

    python benchmarks/moco_shortcut.py RUN [RUN ...] [--batch 128] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from cssl_bench.config import recipe_from_dict  # noqa: E402
from cssl_bench.data.datasets import get_source  # noqa: E402
from cssl_bench.data.loaders import to_input  # noqa: E402
from cssl_bench.data.views import build_view_recipe  # noqa: E402
from cssl_bench.methods import build_method  # noqa: E402
from cssl_bench.methods.base import output_std  # noqa: E402
from cssl_bench.methods.moco import MoCo  # noqa: E402
from cssl_bench.train.checkpoint import atomic_write_text, load_checkpoint, read_run  # noqa: E402
from cssl_bench.train.loop import dataset_options  # noqa: E402


def views_of(recipe, n: int, seed: int = 5) -> dict[str, torch.Tensor]:
    src = get_source(recipe.data.dataset, "train", dataset_options(recipe))
    vr = build_view_recipe(recipe)
    items = [vr(src[i][0], np.random.default_rng([seed, 0, i]))[0] for i in range(n)]
    return {k: to_input(torch.stack([it[k] for it in items]), False) for k in items[0]}


def shortcut_stats(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor) -> dict[str, float]:
    """q, k: [N, D] normalised queries and their keys (row i of k is the positive of row i of q); queue [K, D]."""
    n = q.shape[0]
    inb = q @ k.t()
    pos = inb.diag()
    other = inb.masked_fill(torch.eye(n, dtype=torch.bool), float("-inf")).max(1).values
    other_mean = inb[~torch.eye(n, dtype=torch.bool)].mean()
    qq = (q @ queue.t()).max(1).values
    return {
        "cos_positive": pos.mean().item(),
        "cos_other_in_batch": other_mean.item(),
        "cos_queue": (q @ queue.t()).mean().item(),
        "positive_beats_batch": (pos > other).float().mean().item(),
        "positive_beats_queue": (pos > qq).float().mean().item(),
        "other_beats_queue": (other > qq).float().mean().item(),
        "chance": 1.0 / n,
    }


def measure(run: Path, batch: int) -> dict:
    cfg, _ = read_run(run)
    recipe = recipe_from_dict(cfg)
    m = build_method(recipe)
    if not isinstance(m, MoCo):  # every recipe built on MoCo's implementation (v1, v2, +rotation)
        raise SystemExit(f"{run}: method {recipe.method} is not MoCo")
    m.load_state_dict(load_checkpoint(run / "checkpoints" / "last.pt")["model"])
    views = views_of(recipe, batch)
    queue = m.queue.keys.clone()
    torch.manual_seed(0)  # the key shuffle
    with torch.no_grad():
        m.train()  # as in training: BN on batch statistics, keys through shuffled BN groups
        q, k = m.query(views["v1"]), m.key(views["v2"])
        out = shortcut_stats(q, k, queue)
        out["z_std"] = output_std(q).item()
        m.eval()  # BN on running statistics
        q, k = m.query(views["v1"]), F.normalize(m.head_k(m.backbone_k(views["v2"])), dim=1)
        out["positive_beats_batch_eval_bn"] = shortcut_stats(q, k, queue)["positive_beats_batch"]
    return {"run": str(run), "method": recipe.method, "config_hash": recipe.hash(), **out}


def report(
    benchmark: str, rows: list[dict], cols: list[str], batch: int, json_path: Path | None, size_name: str = "batch"
) -> None:
    """Print ``rows`` as a markdown table (run folder name + ``cols``) and, with ``json_path``, write them with the
    command and date (also used by swav_span.py)."""
    print("| run | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for r in rows:
        print(
            f"| {Path(r['run']).name} | "
            + " | ".join(f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c]) for c in cols)
            + " |"
        )
    if json_path:
        atomic_write_text(
            json_path,
            json.dumps(
                {
                    "benchmark": benchmark,
                    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "command": f"python benchmarks/{benchmark}.py " + " ".join(sys.argv[1:]),
                    size_name: batch,
                    "rows": rows,
                },
                indent=1,
            )
            + "\n",
        )


def cli_main(
    benchmark: str, doc: str, measure_run, cols: list[str], size_flag: str = "--batch", default: int = 128
) -> int:
    """The command line the run diagnostics share: RUN [RUN ...] [--batch N] [--json OUT] (``size_flag``: the
    name of the images-per-measurement option); returns that size."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument(size_flag, dest="size", type=int, default=default)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    report(benchmark, [measure_run(r, args.size) for r in args.runs], cols, args.size, args.json, size_flag.lstrip("-"))
    return args.size


def main() -> None:
    batch = cli_main(
        "moco_shortcut",
        __doc__,
        measure,
        [
            "cos_positive",
            "cos_other_in_batch",
            "cos_queue",
            "positive_beats_batch",
            "positive_beats_queue",
            "other_beats_queue",
            "positive_beats_batch_eval_bn",
            "z_std",
        ],
    )
    print(f"(chance of beating the other keys of a batch: {1 / batch:.4f})")


if __name__ == "__main__":
    main()
