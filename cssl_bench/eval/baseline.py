"""Random-init baselines with honest BatchNorm statistics.

A run's epoch-0 checkpoint (``cssl-bench pretrain METHOD --epochs 0``) is the random-init baseline. Probed
as it is, its BN layers still hold the statistics of initialisation (running mean 0, variance 1): they do
not normalise, whereas a trained network's BN layers hold statistics of the data. ``reestimate_bn`` gives
the other baseline: the same weights with the backbone's BN running statistics re-estimated on the
training images ("precise BN"). Neither is the fair one in general (either can score higher), so tables
and the demo show both and compare against the higher.

The copy it returns carries ``LoadedRun.bn`` (what was estimated, on which images), which keys the
feature and linear-probe caches under ``RUN/features/`` apart from the run's own, and which the probes
write into their records (``probes.bn_record``: ``init_bn: "data"`` plus ``bn_estimate``; docs/records.md).
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import nn

from cssl_bench.data.loader_base import to_input
from cssl_bench.data.loaders import eval_loader
from cssl_bench.eval.features import LoadedRun, _in_memory, eval_transform

BN_IMAGES = 10_000  # training images the statistics are estimated on (all of them when the split is smaller)
BN_BATCH = 256
BN_SEED = 0  # of the subset, when the split has more than BN_IMAGES images


def bn_layers(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``module`` that keep running statistics, in module order."""
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def bn_images(n_train: int, limit: int = BN_IMAGES, batch_size: int = BN_BATCH) -> int:
    """How many of ``n_train`` training images the estimate uses: ``min(n_train, limit)``, rounded down to a
    multiple of ``batch_size`` when that is at least one batch, so that every batch has the same size and the
    cumulative average of the batch means is the mean over the images."""
    n = min(n_train, limit)
    return n // batch_size * batch_size if n >= batch_size else n


@torch.no_grad()
def reestimate_bn(
    run: LoadedRun, dataset: str, limit: int = BN_IMAGES, batch_size: int = BN_BATCH, seed: int = BN_SEED
) -> LoadedRun:
    """A copy of ``run`` whose backbone's BN running statistics are re-estimated on ``dataset``'s train split.

    Images: a seeded subset of ``bn_images(len(train))`` images (``probes.subset``: index order; the whole
    split when that is its size), through the deterministic evaluation transform
    (``eval_transform`` at the run's image size), in batches of ``batch_size``. Each BN layer of
    ``run.method.backbone`` is reset (``reset_running_stats``) and set to a cumulative average
    (``momentum=None``); the backbone runs forward in training mode under ``no_grad`` (MoCo's split BN
    as plain BN, over the whole batch), so each layer's ``running_mean`` ends as the mean over the images
    of its input, per channel, and ``running_var`` as the mean of the batches' unbiased variances. Then
    momenta (and split BN groups) are restored and the copy is put in evaluation mode.

    Weights, heads (their BN layers included) and ``run`` itself are untouched. The copy's ``bn`` field is
    ``{"stats": "data", "dataset", "split": "train", "images", "batch_size", "seed"}``.
    """
    from cssl_bench.eval.probes import source_of, subset

    src = source_of(run, dataset, "train")
    n = bn_images(len(src), limit, batch_size)
    if n == 0:
        from cssl_bench import UserError

        raise UserError(f"{dataset} has no training images to estimate BN statistics on")
    src = subset(src, n, seed)  # the whole split when n is its size
    method = copy.deepcopy(run.method)
    backbone = method.backbone
    bns = bn_layers(backbone)
    saved = [(m.momentum, getattr(m, "splits", None)) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: the plain mean over the batches
        if getattr(m, "splits", None) is not None:
            m.splits = 1  # statistics of the whole batch (the images), not of the training-time groups
    device = next(method.parameters()).device
    backbone.train()
    try:
        workers = 0 if _in_memory(src) else run.recipe.data.workers
        for x, _ in eval_loader(src, eval_transform(run.recipe.data.image_size), batch_size, workers):
            backbone(to_input(x.to(device), run.recipe.model.channels_last))
    finally:
        for m, (momentum, splits) in zip(bns, saved):
            m.momentum = momentum
            if splits is not None:
                m.splits = splits
        method.eval()
    bn = {"stats": "data", "dataset": dataset, "split": "train", "images": n, "batch_size": batch_size, "seed": seed}
    return dataclasses.replace(run, method=method, bn=bn)
