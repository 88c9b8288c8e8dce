"""The training loader a recipe asks for (``data.loader``): the torchvision path or the FFCV path.

Both give the batch contract of ``cssl_bench.data.loader_base`` and the same views; this module is the only
one that knows both (``loaders`` and ``ffcv_loader`` never import each other).
"""

from __future__ import annotations

from cssl_bench import UserError
from cssl_bench.data import ffcv_loader
from cssl_bench.data.datasets import DatasetOptions, ImageSource
from cssl_bench.data.loaders import train_loader

LOADERS = ("auto", "torchvision", "ffcv")


def make_train_loader(
    recipe, source: ImageSource, view_recipe, epoch: int, start_batch: int = 0, rank: int = 0, world: int = 1
):
    """The training loader the recipe asks for (``data.loader``), batch contract of ``loader_base``.

    ``auto``: FFCV when it is installed and a ``.beton`` of the training split exists
    (``cssl-bench data convert``), else torchvision. ``ffcv``: FFCV, writing the ``.beton`` first if
    needed; without ffcv installed, torchvision with a one-line notice. ``torchvision``: always it.
    Both paths draw the same views (``cssl_bench.data.ffcv_loader``)."""
    choice = recipe.data.loader
    if choice not in LOADERS:
        raise UserError(f"unknown loader {choice!r}; choose from {', '.join(LOADERS)}", exit_code=2)
    if choice != "torchvision":
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
