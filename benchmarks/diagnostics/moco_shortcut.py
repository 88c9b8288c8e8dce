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

The measurement is ``cssl_bench.eval.diagnostics.measure_moco_shortcut``.

    python benchmarks/diagnostics/moco_shortcut.py RUN [RUN ...] [--batch 128] [--json OUT.json]
"""

from __future__ import annotations

from _run_table import cli_main  # also puts the repository root on the import path

from cssl_bench.eval.diagnostics import measure_moco_shortcut

COLUMNS = [
    "cos_positive",
    "cos_other_in_batch",
    "cos_queue",
    "positive_beats_batch",
    "positive_beats_queue",
    "other_beats_queue",
    "positive_beats_batch_eval_bn",
    "z_std",
]

if __name__ == "__main__":
    batch = cli_main("moco_shortcut", __doc__, measure_moco_shortcut, COLUMNS)
    print(f"(chance of beating the other keys of a batch: {1 / batch:.4f})")
