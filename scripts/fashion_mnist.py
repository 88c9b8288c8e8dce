"""Export Fashion-MNIST (Debian package `dataset-fashion-mnist`: Zalando product photographs, 28 px grey, 10
classes, MIT licence) as a cssl-bench image folder: the real-image check of the budget recipes.

Install first (as root; Debian registry only, no other host):
    apt-get update && apt-get install -y dataset-fashion-mnist
Files land in /usr/share/datasets/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz

Usage: python scripts/fashion_mnist.py OUT_ROOT [--train-per-class N] [--test-per-class N]
       (no cap = all 60000 + 10000)
Writes OUT_ROOT/{train,test}/{class}/{i:05d}.png  (i = index within the official split;
a cap keeps the first N images of each class in file order, so it is deterministic)
"""

from __future__ import annotations

import argparse
import gzip
import struct
from pathlib import Path

import numpy as np
from PIL import Image

SRC = Path("/usr/share/datasets/fashion-mnist")
# Official Fashion-MNIST label order (0..9); names made folder-safe.
CLASSES = ["t-shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"]


def _read_idx(path: Path) -> np.ndarray:
    """Parse a gzipped IDX file (MNIST format) into a uint8 array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    return arr.reshape(shape)


def load_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """images uint8 [N, 28, 28, 3] (grey replicated to RGB), labels int64 [N]."""
    prefix = {"train": "train", "test": "t10k"}[split]
    x = _read_idx(SRC / f"{prefix}-images-idx3-ubyte.gz")  # [N, 28, 28]
    y = _read_idx(SRC / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    assert x.shape[0] == y.shape[0]
    return np.repeat(x[..., None], 3, axis=-1), y


def export(root: Path, per_class: dict[str, int | None] | None = None) -> dict[str, np.ndarray]:
    per_class = per_class or {}
    counts = {}
    for split in ("train", "test"):
        images, labels = load_split(split)
        keep = np.arange(len(labels))
        cap = per_class.get(split)
        if cap:
            keep = np.sort(np.concatenate([np.flatnonzero(labels == c)[:cap] for c in range(len(CLASSES))]))
        for c in CLASSES:
            (root / split / c).mkdir(parents=True, exist_ok=True)
        for i in keep:
            Image.fromarray(images[i], "RGB").save(root / split / CLASSES[labels[i]] / f"{i:05d}.png")
        counts[split] = np.bincount(labels[keep], minlength=len(CLASSES))
    return counts


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("out", help="output folder (a new or empty one)")
    ap.add_argument("--train-per-class", type=int, default=None)
    ap.add_argument("--test-per-class", type=int, default=None)
    a = ap.parse_args()
    counts = export(Path(a.out), {"train": a.train_per_class, "test": a.test_per_class})
    for split, c in counts.items():
        print(split, int(c.sum()), dict(zip(CLASSES, c.tolist())))
