"""Named datasets. Every dataset split is an ``ImageSource``: uint8 images [3, H, W] with integer labels.

Names (``--dataset``):
- ``embedded``, ``embedded-color``, ``embedded-shift``: the procedural dataset and its derived tasks
  (see ``cssl_bench.data.embedded``); ``embedded64`` etc. render at 64 px.
- ``imagefolder:PATH``: class sub-folders of images (``PATH/train`` and ``PATH/test`` when present).
The real datasets (ImageNet-100, Flowers-102, ...: ``cssl_bench.data.named``) follow the embedded ones in
``REGISTRY``; ``register`` adds more. The source types live in ``cssl_bench.data.sources``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from cssl_bench import UserError
from cssl_bench.data import embedded as emb
from cssl_bench.data import named
from cssl_bench.data.sources import ArraySource, DatasetInfo, DatasetOptions, FolderSource, ImageSource


def _embedded(task: str) -> Callable[[str, DatasetOptions], ImageSource]:
    def build(split: str, o: DatasetOptions) -> ImageSource:
        spec = emb.EmbeddedSpec(
            o.embedded_size,
            o.embedded_train,
            o.embedded_test,
            o.embedded_seed,
            o.embedded_texture_contrast,
            o.embedded_class_color,
            o.embedded_background_jitter,
            o.embedded_version,
        )
        name = {"label": "embedded", "color": "embedded-color", "fine": "embedded-fine", "shift": "embedded-shift"}[
            task
        ]
        field_ = "label" if task == "shift" else task
        try:
            classes = list(spec.classes(field_))
        except ValueError as e:
            raise UserError(f"{name}: {e}", exit_code=2) from None
        data = emb.load(spec)
        part = split
        if task == "shift" and split == "test":
            part = "shift"
        d = data[part]
        attrs = {k: d[k] for k in spec.attributes}
        return ArraySource(f"{name}/{split}", d["images"], d[field_], classes, attrs)

    return build


REGISTRY: dict[str, DatasetInfo] = {
    "embedded": DatasetInfo(
        "embedded", "procedural shapes, 10 shape classes", _embedded("label"), stand_in_for="ImageNet-100"
    ),
    "embedded-color": DatasetInfo(
        "embedded-color",
        "the embedded images labelled by object colour (v1: 10 palette colours; v2: 12 hue bins)",
        _embedded("color"),
        stand_in_for="iNat-1k / CUB-200 / Flowers-102 (generator v1)",
    ),
    "embedded-fine": DatasetInfo(
        "embedded-fine",
        "the embedded images labelled by sub-category (v2: 40, four per class)",
        _embedded("fine"),
        stand_in_for="iNat-1k / CUB-200 / Flowers-102",
    ),
    "embedded-shift": DatasetInfo(
        "embedded-shift",
        "train: filled shapes; test: held-out outline style",
        _embedded("shift"),
        stand_in_for="ObjectNet-13",
    ),
    **{info.name: info for info in named.DATASETS},  # ImageNet, Flowers-102, ... (cssl_bench.data.named)
}


def register(info: DatasetInfo) -> None:
    REGISTRY[info.name] = info


def imagefolder_split(root: Path, split: str) -> Path:
    """``root/train`` or ``root/test`` (``val`` accepted for test) when the folder has splits, else ``root``."""
    if (root / "train").is_dir():
        if split == "train":
            return root / "train"
        for alt in ("test", "val"):
            if (root / alt).is_dir():
                return root / alt
        raise UserError(f"{root} has train/ but neither test/ nor val/")
    return root


def get_source(name: str, split: str, options: DatasetOptions | None = None) -> ImageSource:
    """The ``split`` (``train`` or ``test``) of the dataset called ``name``."""
    o = options or DatasetOptions()
    if name.startswith("imagefolder:"):
        check_dataset_name(name)
        root = Path(os.path.expanduser(name.split(":", 1)[1]))
        if not root.exists():
            raise UserError(f"dataset folder {root} does not exist")
        return FolderSource(name, imagefolder_split(root, split), skip_bad=o.skip_bad)
    if name not in REGISTRY:
        raise UserError(
            f"unknown dataset {name!r}; choose from {', '.join(sorted(REGISTRY))} or imagefolder:PATH", exit_code=2
        )
    return REGISTRY[name].build(split, o)


def check_dataset_name(name: str) -> None:
    if name.startswith("imagefolder:") and not name.split(":", 1)[1].strip():
        raise UserError(
            "imagefolder: needs a folder: imagefolder:PATH (use imagefolder:. for the current folder)", exit_code=2
        )
    if not name.startswith("imagefolder:") and name not in REGISTRY:
        raise UserError(
            f"unknown dataset {name!r}; choose from {', '.join(sorted(REGISTRY))} or imagefolder:PATH", exit_code=2
        )


class ViewDataset(torch.utils.data.Dataset):
    """Applies a view recipe to a source. Each item's randomness comes from ``(seed, epoch, index)``, so
    the views do not depend on worker count or order, and a resumed run draws exactly the same views."""

    def __init__(self, source: ImageSource, recipe, seed: int = 0):
        self.source, self.recipe, self.seed, self.epoch = source, recipe, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        img, label = self.source[i]
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        views, _ = self.recipe(img, rng)
        return views, label, i
