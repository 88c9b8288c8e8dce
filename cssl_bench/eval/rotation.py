"""The 4-way rotation task of LooC Table 1 (Xiao et al., ICLR 2021): how much orientation information
the frozen features keep.

Every evaluation image appears four times, rotated by 0, 90, 180 and 270 degrees (counter-clockwise)
and labelled by the angle (label k = k quarter turns); a linear probe is trained on the rotated train
images' features and tested on the rotated test images' features. Metric ``rotation/acc`` (top-1,
percent; chance 25%). The probe trains on cached features of centre views (no crop/flip
augmentation: a random crop of a rotated image is still informative, but the feature cache is what
makes the probe take seconds).
"""

from __future__ import annotations

import numpy as np
import torch

from cssl_bench.data.datasets import ImageSource
from cssl_bench.eval.features import LoadedRun, features
from cssl_bench.eval.linear import LinearProtocol, fit_linear
from cssl_bench.eval.probes import accuracy, records_for, resolve_protocol, source_of, subset

ANGLES = (0, 90, 180, 270)


class RotatedSource(ImageSource):
    """Item ``j`` is image ``j // 4`` of ``source`` rotated by ``j % 4`` quarter turns (counter-clockwise),
    labelled ``j % 4``; length 4 x len(source)."""

    classes = [str(a) for a in ANGLES]

    def __init__(self, source: ImageSource):
        self.source = source
        self.labels = np.tile(np.arange(4, dtype=np.int64), len(source))
        self.name = f"{getattr(source, 'name', 'source')}/rotated"

    def image(self, j: int) -> torch.Tensor:
        k = j % 4
        img = self.source.image(j // 4)
        return torch.rot90(img, k, dims=(-2, -1)) if k else img


def probe_rotation(
    run: LoadedRun,
    dataset: str,
    protocol: LinearProtocol | str | None = None,
    feature: str | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> list[dict]:
    """Rotation accuracy of ``run``'s frozen ``feature`` on ``dataset`` (``limit``: a seeded subset of
    that many train and test images before rotating, for speed)."""
    feature = feature or run.default_feature
    protocol = resolve_protocol(run, protocol).with_overrides(augment=False)
    tag = {"task": "rotation4", "limit": limit, "subset_seed": seed}
    out = {}
    for split in ("train", "test"):
        src = RotatedSource(subset(source_of(run, dataset, split), limit, seed))
        out[split] = features(run, dataset, split, feature, source=src, cache_tag=tag)
    (tf, ty), (vf, vy) = out["train"], out["test"]
    clf = fit_linear(tf, ty, protocol, 4)
    acc = accuracy(clf, vf, vy)
    opts = {
        "name": "rotation",
        "angles": list(ANGLES),
        "limit": limit,
        "subset_seed": seed,
        "linear": protocol.record(),
    }
    return records_for(run, dataset, feature, opts, {"rotation/acc": acc[1]})
