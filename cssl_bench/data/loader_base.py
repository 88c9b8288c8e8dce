"""What the training loaders share: the batch contract, the sample order, the model input and numba's cache.

Batch contract of every training loader: ``(views: dict[str, uint8 [B,3,H,W]], labels int64 [B], index int64 [B])``.
Two paths produce it, beside each other and never importing each other: the torchvision path
(``cssl_bench.data.loaders``: a ``DataLoader`` over a ``ViewDataset``, views item by item) and the FFCV path
(``cssl_bench.data.ffcv_loader``: ``.beton`` files, views for a whole batch by ``cssl_bench.data.batched``).
Both walk the ``EpochSampler`` order and draw each item's views from the generator ``(seed, epoch, index)``,
so they give the same batches; ``cssl_bench.data.train_loader`` picks one for a recipe.

- ``EpochSampler``: the order of samples, a permutation drawn from ``(seed, epoch)`` and sliced per rank, so it
  does not depend on worker count and a resumed run skips to any batch without loading the skipped samples.
- ``to_input``: a batch's uint8 images -> the model's normalised float input (ImageNet mean and std).
- ``prepare_numba``: numba's on-disk cache in our cache folder (the FFCV decoder's and the batched views' kernels).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from cssl_bench.data.embedded import cache_dir

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255


def to_input(x: torch.Tensor, channels_last: bool = True) -> torch.Tensor:
    """uint8 [B,3,H,W] -> normalised float32 (ImageNet mean/std), channels-last when asked."""
    out = (x.float() - MEAN.to(x.device)) / STD.to(x.device)
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out


class EpochSampler(torch.utils.data.Sampler):
    """Indices of one epoch: a permutation from (seed, epoch), this rank's share, from batch ``start_batch`` on."""

    def __init__(
        self, n: int, batch_size: int, seed: int, epoch: int, start_batch: int = 0, rank: int = 0, world: int = 1
    ):
        g = torch.Generator().manual_seed(seed * 100003 + epoch)
        perm = torch.randperm(n, generator=g)
        global_batch = batch_size * world
        steps = n // global_batch
        perm = perm[: steps * global_batch].view(steps, world, batch_size)[:, rank]
        self.indices = perm[start_batch:].reshape(-1).tolist()

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def steps_per_epoch(n: int, batch_size: int, world: int = 1) -> int:
    return n // (batch_size * world)


def numba_cache_dir() -> Path:
    return Path(os.environ.get("NUMBA_CACHE_DIR") or cache_dir() / "numba")


def prepare_numba() -> None:
    """Send numba's on-disk cache to our cache folder (read by numba when it is first imported)."""
    os.environ.setdefault("NUMBA_CACHE_DIR", str(numba_cache_dir()))
    if "numba" in sys.modules:  # already imported (e.g. by another library): set its config directly
        from numba.core import config

        if not getattr(config, "CACHE_DIR", ""):
            config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]
