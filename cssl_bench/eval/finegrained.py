"""Fine-grained linear classification (LooC Table 2: iNaturalist 2019 "iNat-1k", CUB-200-2011).

A linear probe on frozen features with a named linear protocol (``cssl_bench.eval.linear``), trained
on the dataset's train split and scored top-1/top-5 on its test split: ``finegrained/top1`` and
``finegrained/top5``. The CPU-scale stand-in is ``embedded-fine``: the embedded images (generator v2)
labelled by their 40 sub-categories, four per class, which differ in hue, saturation, texture and the
colour of the class's part, as species within a genus do: details that colour jitter pushes features to
ignore. (Generator v1 had no sub-categories; its stand-in was ``embedded-color``, the object's colour.)
"""

from __future__ import annotations

from cssl_bench.eval.features import LoadedRun
from cssl_bench.eval.linear import LinearProtocol
from cssl_bench.eval.probes import probe_linear, resolve_protocol

DEFAULT_DATASET = "embedded-fine"


def probe_finegrained(
    run: LoadedRun, dataset: str, protocol: LinearProtocol | str | None = None, feature: str | None = None
) -> list[dict]:
    recs, _ = probe_linear(run, dataset, resolve_protocol(run, protocol), feature, metric_prefix="finegrained")
    for r in recs:
        r["protocol"] = {"name": "finegrained", "linear": r["protocol"]}
    return recs
