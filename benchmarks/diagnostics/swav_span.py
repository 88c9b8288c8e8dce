"""Where do a trained SwAV run's embeddings lie relative to its prototypes?

SwAV's loss sits at ln(number of prototypes) when every prediction is uniform. For each run (the last checkpoint
of a SwAV run directory) this embeds one batch of first large crops (the run's own augmentations, fixed seed) as
the training step does, normalises the prototypes, and prints the mean |score| z.c, the std of the scores over
the prototypes (0: uniform predictions), the fraction of each embedding's norm inside the prototypes' span, and
the mean cosine between prototypes, the smallest and median singular values of the prototypes, the
fraction of z's energy along the prototypes' weakest direction and the share of the centred embeddings'
variance along their first principal direction. The measurement is ``cssl_bench.eval.diagnostics.measure_prototype_span``.

    python benchmarks/diagnostics/swav_span.py RUN [RUN ...] [--batch 128] [--json OUT.json]
"""

from __future__ import annotations

from _run_table import cli_main  # also puts the repository root on the import path

from cssl_bench.eval.diagnostics import measure_prototype_span

COLUMNS = [
    "n_prototypes",
    "dim",
    "abs_score",
    "score_std",
    "norm_in_span",
    "prototype_cos",
    "weak_sv",
    "median_sv",
    "energy_on_weakest",
    "top_direction_share",
]

if __name__ == "__main__":
    cli_main("swav_span", __doc__, measure_prototype_span, COLUMNS)
