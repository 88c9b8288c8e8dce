"""Training and evaluation loaders with one batch contract: ``(views: dict[str, uint8 [B,3,H,W]], labels [B], index [B])``.

The torchvision path is a ``DataLoader`` over a ``ViewDataset``. The order of samples is a permutation
drawn from ``(seed, epoch)``, sliced per rank, so it is independent of worker count and a resumed
run can skip to any batch without loading the skipped samples.
"""

from __future__ import annotations

import torch

from cssl_bench import UserError
from cssl_bench.data.datasets import ImageSource, ViewDataset

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


LOADERS = ("auto", "torchvision", "ffcv")


def make_train_loader(
    recipe, source: ImageSource, view_recipe, epoch: int, start_batch: int = 0, rank: int = 0, world: int = 1
):
    """The training loader the recipe asks for (``data.loader``), batch contract above.

    ``auto``: FFCV when it is installed and a ``.beton`` of the training split exists
    (``cssl-bench data convert``), else torchvision. ``ffcv``: FFCV, writing the ``.beton`` first if
    needed; without ffcv installed, torchvision with a one-line notice. ``torchvision``: always it.
    Both paths draw the same views (``cssl_bench.data.ffcv_loader``)."""
    choice = recipe.data.loader
    if choice not in LOADERS:
        raise UserError(f"unknown loader {choice!r}; choose from {', '.join(LOADERS)}", exit_code=2)
    if choice != "torchvision":
        from cssl_bench.data import ffcv_loader
        from cssl_bench.data.datasets import DatasetOptions

        d = recipe.data
        options = DatasetOptions.from_recipe(d)
        loader = ffcv_loader.ffcv_train_loader(
            choice,
            d.dataset,
            source,
            options,
            view_recipe,
            recipe.train.batch_size,
            recipe.train.seed,
            epoch,
            start_batch,
            d.workers,
            rank,
            world,
        )
        if loader is not None:
            return loader
    loader = train_loader(
        source,
        view_recipe,
        recipe.train.batch_size,
        recipe.train.seed,
        epoch,
        start_batch,
        recipe.data.workers,
        rank,
        world,
    )
    loader.provenance = {"loader": "torchvision"}  # what the run records (ffcv: also how its file stores the images)
    return loader


def eval_loader(source: ImageSource, transform, batch_size: int = 256, workers: int = 0):
    """Deterministic single-view loader: ``transform(img) -> img`` (e.g. ``CenterResize``)."""

    class _DS(torch.utils.data.Dataset):
        def __len__(self):
            return len(source)

        def __getitem__(self, i):
            img, y = source[i]
            return transform(img), y

    return torch.utils.data.DataLoader(_DS(), batch_size=batch_size, shuffle=False, num_workers=workers)
