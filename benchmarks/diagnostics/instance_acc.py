"""Do a run's frozen backbone features tell images apart across two augmentations?

The self-supervised methods are trained to recognise an image from another augmented view of it. For each run
(any method; the last checkpoint) this takes ``--images`` embedded training images, draws two views of each with
one augmentation for every run (MoCo v2's recipe at the run's scale, fixed seed: the same pairs for all runs),
computes the backbone's frozen features as the probes do (BN on running statistics), and reports how often an
image's second view is the nearest (cosine) of all second views to its first view: top-1 instance retrieval
across augmentations (chance 1 / images). Put beside the kNN class accuracy, it says whether a run learned to
recognise instances by cues that do not carry the class (high retrieval, low kNN) or learned little at all.
The measurement is ``cssl_bench.eval.diagnostics.measure_instance_retrieval``.

    python benchmarks/diagnostics/instance_acc.py RUN [RUN ...] [--images 512] [--json OUT.json]
"""

from __future__ import annotations

from _run_table import cli_main  # also puts the repository root on the import path

from cssl_bench.eval.diagnostics import measure_instance_retrieval

if __name__ == "__main__":
    cli_main(
        "instance_acc",
        __doc__,
        measure_instance_retrieval,
        ["method", "epoch", "instance_top1", "chance"],
        size_flag="--images",
        default=512,
    )
