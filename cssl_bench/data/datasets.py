"""Named datasets. Every dataset split is an ``ImageSource``: uint8 images [3, H, W] with integer labels.

Names (``--dataset``):
- ``embedded``, ``embedded-color``, ``embedded-shift``: the procedural dataset and its derived tasks
  (see ``cssl_bench.data.embedded``); ``embedded64`` etc. render at 64 px.
- ``imagefolder:PATH``: class sub-folders of images (``PATH/train`` and ``PATH/test`` when present).
Further named datasets (ImageNet-100, Flowers-102, ...) register themselves in ``REGISTRY``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from cssl_bench import UserError
from cssl_bench.data import embedded as emb

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")


class ImageSource(torch.utils.data.Dataset):
    """A labelled split: ``image(i)`` -> uint8 tensor [3, H, W]; ``labels`` -> int64 array."""

    name: str = "source"
    classes: list[str]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> torch.Tensor:
        raise NotImplementedError

    def __getitem__(self, i: int):
        return self.image(i), int(self.labels[i])


class ArraySource(ImageSource):
    def __init__(
        self, name: str, images: np.ndarray, labels: np.ndarray, classes: list[str], attributes: dict | None = None
    ):
        self.name, self.images, self.labels, self.classes = name, images, labels.astype(np.int64), list(classes)
        self.attributes = attributes or {}

    def image(self, i):
        return torch.from_numpy(np.ascontiguousarray(self.images[i])).permute(2, 0, 1).contiguous()


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode (L, LA, P, RGBA, CMYK, I;16, I, F, ...) to 8-bit RGB; alpha is composited on white."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(a)
        return Image.fromarray(a.astype(np.uint8)).convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        bg = Image.new("RGB", rgba.size, (255, 255, 255))
        bg.paste(rgba, mask=rgba.split()[-1])
        return bg
    return img.convert("RGB")


def read_image(path: Path) -> torch.Tensor:
    with Image.open(path) as im:
        im.load()
        rgb = to_rgb(im)
    return torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def scan_folder(root: Path) -> tuple[list[Path], list[int], list[str]]:
    """Files of ``root/CLASS/...`` (sorted, recursive); a folder with no class sub-folders is one unlabelled class."""
    if not root.exists():
        raise UserError(f"dataset folder {root} does not exist")
    if not root.is_dir():
        raise UserError(f"dataset path {root} is not a folder")
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if subdirs:
        classes = [d.name for d in subdirs]
        files, labels = [], []
        for ci, d in enumerate(subdirs):
            for f in sorted(p for p in d.rglob("*") if p.is_file()):
                if f.suffix.lower() in IMAGE_EXTENSIONS:
                    files.append(f)
                    labels.append(ci)
    else:
        classes = ["unlabelled"]
        files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        labels = [0] * len(files)
    if not files:
        raise UserError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}")
    return files, labels, classes


class FolderSource(ImageSource):
    """Images in class sub-folders. Unreadable files raise a ``UserError`` naming them, unless ``skip_bad``."""

    def __init__(self, name: str, root: Path, skip_bad: bool = False):
        self.name, self.root, self.skip_bad = name, root, skip_bad
        self.files, labels, self.classes = scan_folder(root)
        self.labels = np.asarray(labels, np.int64)
        self.bad: list[Path] = []

    def image(self, i):
        try:
            return read_image(self.files[i])
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            if not self.skip_bad:
                raise UserError(
                    f"unreadable image {self.files[i]} ({type(e).__name__}: {e}); to skip such files, pretrain with --skip-bad (recipe data.skip_bad=true)"
                ) from None
            self.bad.append(self.files[i])
            return torch.zeros(3, 32, 32, dtype=torch.uint8)


@dataclass
class DatasetOptions:
    embedded_size: int = 32
    embedded_train: int = 10000
    embedded_test: int = 2000
    embedded_seed: int = 0
    skip_bad: bool = False
    embedded_texture_contrast: float = 0.45
    embedded_class_color: float = 0.0
    embedded_background_jitter: float = 1.0
    embedded_version: int = 2

    @classmethod
    def from_recipe(cls, d) -> DatasetOptions:
        """From a recipe's ``data`` section (fields it lacks keep their defaults)."""
        return cls(**{f.name: getattr(d, f.name) for f in fields(cls) if hasattr(d, f.name)})


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


@dataclass
class DatasetInfo:
    name: str
    description: str
    build: Callable[[str, DatasetOptions], ImageSource]
    where: Callable[[], str] = lambda: "generated in the package"
    found: Callable[[], bool] = lambda: True
    splits: tuple[str, ...] = ("train", "test")
    stand_in_for: str = ""


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


from cssl_bench.data import named as _named  # noqa: E402,F401  registers ImageNet, Flowers-102, ... (last: named imports this module)
