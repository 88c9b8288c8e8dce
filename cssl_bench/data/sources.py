"""Image sources: a labelled split of images, read from arrays or class folders, and what describes a dataset.

Every dataset split is an ``ImageSource``: ``image(i)`` -> uint8 [3, H, W], integer ``labels``, class names.
``DatasetInfo`` describes a named dataset (how to build a split, where it is read from, whether it is there);
``DatasetOptions`` holds the recipe's options that change a dataset's images. ``cssl_bench.data.datasets``
keeps the registry of names; ``cssl_bench.data.named`` describes the real datasets with these types.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from cssl_bench import UserError

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


@dataclass
class DatasetInfo:
    name: str
    description: str
    build: Callable[[str, DatasetOptions], ImageSource]
    where: Callable[[], str] = lambda: "generated in the package"
    found: Callable[[], bool] = lambda: True
    splits: tuple[str, ...] = ("train", "test")
    stand_in_for: str = ""
