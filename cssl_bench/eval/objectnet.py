"""ObjectNet-13 scoring (LooC Table 3; Barbu et al., ObjectNet, NeurIPS 2019).

ON-13 is the set of 13 ObjectNet classes that map into ImageNet-100 (docs/protocols.md, section 2). Default scoring
[open]: the IN-100 linear probe (the cached classifier of ``probe linear``) scores every ObjectNet
image; its logits are restricted to the columns of the 13 mapped classes and top-1/top-5 are taken
among those 13. Metrics ``objectnet/top1``, ``objectnet/top5``.

The CPU-scale stand-in is ``embedded-shift``: the probe is trained on ``embedded`` (filled shapes) and
tested on the held-out outline style of the same 10 classes, whose columns are all of the probe's, so
the restriction is the identity. The evaluation dataset's classes are matched to the probe's by name,
or through ``ON13`` (name <-> WordNet id).
"""

from __future__ import annotations

import torch

from cssl_bench.eval.features import LoadedRun, features
from cssl_bench.eval.knn import topk_accuracy
from cssl_bench.eval.linear import LinearProtocol
from cssl_bench.eval.probes import class_columns, linear_classifier, records_for, resolve_protocol, source_of

ON13: dict[str, str] = {
    "park bench": "n03891251",
    "bottlecap": "n02877765",
    "rocking chair": "n04099969",
    "football helmet": "n03379051",
    "iron": "n03584829",
    "jean": "n03594734",
    "computer keyboard": "n03085013",
    "lampshade": "n03637318",
    "laptop": "n03642806",
    "mixing bowl": "n03775546",
    "safety pin": "n04127249",
    "vacuum cleaner": "n04517823",
    "car wheel": "n02974003",
}
# The dataset whose linear probe scores each shifted dataset (its "IN-100").
PROBE_DATASET = {"objectnet13": "imagenet100", "embedded-shift": "embedded"}
# ObjectNet folder names use underscores or other spellings; accept the common ones.
_ALIASES = {**ON13, **{k.replace(" ", "_"): v for k, v in ON13.items()}}


def restricted_scores(logits: torch.Tensor, columns: list[int]) -> torch.Tensor:
    """Logits [N, C_probe] -> scores [N, len(columns)] over the mapped classes only (eval class order)."""
    return logits[:, columns]


def probe_objectnet(
    run: LoadedRun,
    dataset: str,
    protocol: LinearProtocol | str | None = None,
    feature: str | None = None,
    probe_dataset: str | None = None,
) -> list[dict]:
    """Top-1/top-5 of the ``probe_dataset`` linear probe on ``dataset``'s test split, logits restricted to its classes."""
    feature = feature or run.default_feature
    probe_dataset = probe_dataset or PROBE_DATASET.get(dataset, dataset)
    protocol = resolve_protocol(run, protocol)
    clf = linear_classifier(run, probe_dataset, protocol, feature)
    columns = class_columns(
        list(source_of(run, dataset, "test").classes), list(source_of(run, probe_dataset, "train").classes), _ALIASES
    )
    f, y = features(run, dataset, "test", feature)
    with torch.no_grad():
        acc = topk_accuracy(restricted_scores(clf(f), columns), y)
    opts = {
        "name": "objectnet",
        "scoring": "restricted-logits",
        "probe_dataset": probe_dataset,
        "classes": len(columns),
        "linear": protocol.record(),
    }
    return records_for(run, dataset, feature, opts, {"objectnet/top1": acc[1], "objectnet/top5": acc[5]})
