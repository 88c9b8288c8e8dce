"""The torchvision path: a ``DataLoader`` over a ``ViewDataset`` (views item by item, in worker processes).

Batches follow the contract of ``cssl_bench.data.loader_base`` (``EpochSampler`` order; each item's views from
the generator ``(seed, epoch, index)``), as the FFCV path's do; ``eval_loader`` is the single-view loader of
the evaluations. ``cssl_bench.data.train_loader`` chooses between this path and the FFCV one.
"""

from __future__ import annotations

import torch

from cssl_bench import UserError
from cssl_bench.data.datasets import ImageSource, ViewDataset
from cssl_bench.data.loader_base import EpochSampler


def train_loader(
    source: ImageSource,
    view_recipe,
    batch_size: int,
    seed: int,
    epoch: int,
    start_batch: int = 0,
    workers: int = 0,
    rank: int = 0,
    world: int = 1,
):
    """The torchvision training loader: this rank's batches of ``epoch`` from batch ``start_batch`` on, the
    views drawn in ``workers`` processes (batch contract of ``loader_base``)."""
    if batch_size * world > len(source):
        raise UserError(
            f"batch size {batch_size * world} is larger than the dataset ({len(source)} images); use a smaller --batch-size",
            exit_code=2,
        )
    ds = ViewDataset(source, view_recipe, seed)
    ds.set_epoch(epoch)
    sampler = EpochSampler(len(source), batch_size, seed, epoch, start_batch, rank, world)
    # its own generator: creating an iterator must not draw from the global RNG, or a resumed run's
    # random stream (MoCo's shuffle, dropout) would differ from an uninterrupted one
    gen = torch.Generator().manual_seed(seed * 100003 + epoch)
    return torch.utils.data.DataLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        drop_last=True,
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
        generator=gen,
    )


def eval_loader(source: ImageSource, transform, batch_size: int = 256, workers: int = 0):
    """Deterministic single-view loader: ``transform(img) -> img`` (e.g. ``CenterResize``)."""

    class _DS(torch.utils.data.Dataset):
        def __len__(self):
            return len(source)

        def __getitem__(self, i):
            img, y = source[i]
            return transform(img), y

    return torch.utils.data.DataLoader(_DS(), batch_size=batch_size, shuffle=False, num_workers=workers)
