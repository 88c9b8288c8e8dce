"""Do a run's frozen backbone features tell images apart across two augmentations?

The self-supervised methods are trained to recognise an image from another augmented view of it. For each run
(any method; the last checkpoint) this takes ``--images`` embedded training images, draws two views of each with
one augmentation for every run (MoCo v2's recipe at the run's scale, fixed seed: the same pairs for all runs),
computes the backbone's frozen features as the probes do (BN on running statistics), and reports how often an
image's second view is the nearest (cosine) of all second views to its first view: top-1 instance retrieval
across augmentations (chance 1 / images). Put beside the kNN class accuracy, it says whether a run learned to
recognise instances by cues that do not carry the class (high retrieval, low kNN) or learned little at all.

    python benchmarks/instance_acc.py RUN [RUN ...] [--images 512] [--json OUT.json]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from moco_shortcut import cli_main, views_of  # noqa: E402  (also sets OMP_WAIT_POLICY and the import path)

from cssl_bench.config import load_recipe  # noqa: E402
from cssl_bench.eval.features import load_run  # noqa: E402


def retrieval_top1(a: torch.Tensor, b: torch.Tensor) -> float:
    """a, b: [N, D] features of two views of the same N images; the fraction of rows i whose nearest row of b
    (cosine) is row i."""
    sim = F.normalize(a, dim=1) @ F.normalize(b, dim=1).t()
    return (sim.argmax(1) == torch.arange(a.shape[0])).float().mean().item()


VIEWS = "moco-v2"  # every run is tested on the same pairs: two views from MoCo v2's recipe at the run's scale


def measure(run_dir: Path, images: int) -> dict:
    run = load_run(run_dir)
    views = views_of(load_recipe(VIEWS, run.recipe.scale), images)
    dev = next(run.method.parameters()).device
    with torch.no_grad():
        fa, fb = (run.method.features(views[k].to(dev), "backbone").float().cpu() for k in ("v1", "v2"))
    return {
        "run": str(run_dir),
        "method": run.recipe.method,
        "epoch": run.epoch,
        "config_hash": run.recipe.hash(),
        "images": images,
        "views": VIEWS,
        "instance_top1": retrieval_top1(fa, fb),
        "chance": 1.0 / images,
    }


def main() -> None:
    cli_main(
        "instance_acc",
        __doc__,
        measure,
        ["method", "epoch", "instance_top1", "chance"],
        size_flag="--images",
        default=512,
    )


if __name__ == "__main__":
    main()
