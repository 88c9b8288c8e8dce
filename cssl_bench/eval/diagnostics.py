"""Diagnostics of a trained run that are not paper metrics: what a checkpoint's features and embeddings do on a
batch of its own training views. Nothing here writes a result record; the scripts in ``benchmarks/diagnostics/``
print these measurements as tables and JSON, and docs/protocols.md (section 6) and
``benchmarks/diagnostics/tiny_sweep.md`` record what they showed.

- ``instance_retrieval_top1`` / ``measure_instance_retrieval``: does a frozen backbone recognise an image from
  another augmented view of it (the pretext task of the instance-discrimination methods)?
- ``moco_shortcut_stats`` / ``measure_moco_shortcut``: does a MoCo query find *its* key, or only "a key of the
  current encoder" (He et al., Momentum Contrast for Unsupervised Visual Representation Learning, CVPR 2020,
  section 3.2: a key encoder that changes too fast makes the queue's keys inconsistent with the current ones)?
- ``prototype_span_stats`` / ``measure_prototype_span``: where SwAV's embeddings lie relative to its prototypes
  (Caron et al., NeurIPS 2020): with uniform scores the swapped-prediction loss sits at ln(prototypes).

The pure statistics take tensors and return plain floats; the ``measure_*`` functions load a run directory's last
checkpoint (``eval.features.load_run``) and draw their views with a fixed seed, so two calls on one run agree.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cssl_bench import UserError
from cssl_bench.config import Recipe, load_recipe
from cssl_bench.data.datasets import get_source
from cssl_bench.data.loader_base import to_input
from cssl_bench.data.views import build_view_recipe
from cssl_bench.eval.features import load_run
from cssl_bench.methods.base import output_std
from cssl_bench.methods.moco import MoCo
from cssl_bench.train.loop import dataset_options

# Every run's instance retrieval is measured on the same pairs: two views from MoCo v2's recipe at the run's scale
RETRIEVAL_VIEWS = "moco-v2"


def training_views(recipe: Recipe, n: int, seed: int = 5) -> dict[str, torch.Tensor]:
    """The views ``recipe``'s own view recipe draws for the first ``n`` images of its training split, as network
    inputs: {view name: float32 [n, 3, H, W]} (ImageNet-normalised, NCHW). Image i's views come from the generator
    ``[seed, 0, i]``, so the same (recipe, n, seed) always gives the same tensors."""
    src = get_source(recipe.data.dataset, "train", dataset_options(recipe))
    if n > len(src):
        raise UserError(f"{n} images asked for, but the training split has {len(src)}", exit_code=2)
    vr = build_view_recipe(recipe)
    items = [vr(src[i][0], np.random.default_rng([seed, 0, i]))[0] for i in range(n)]
    return {k: to_input(torch.stack([it[k] for it in items]), False) for k in items[0]}


def instance_retrieval_top1(a: torch.Tensor, b: torch.Tensor) -> float:
    """a, b: [N, D] features of two views of the same N images (row i of both is image i). The fraction of rows i
    whose nearest row of ``b`` by cosine similarity is row i: top-1 instance retrieval, chance 1/N."""
    sim = F.normalize(a, dim=1) @ F.normalize(b, dim=1).t()
    return (sim.argmax(1) == torch.arange(a.shape[0], device=sim.device)).float().mean().item()


def moco_shortcut_stats(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor) -> dict[str, float]:
    """q, k: [N, D] L2-normalised queries and keys, row i of ``k`` the positive of row i of ``q``; queue: [K, D]
    L2-normalised older keys. Returns mean cosines (``cos_positive``, ``cos_other_in_batch`` over the N(N-1) pairs
    of different images, ``cos_queue``) and three rates: ``positive_beats_batch`` (the positive is more similar than
    every other key of the batch: instance discrimination, ``chance`` = 1/N), ``positive_beats_queue`` (more similar
    than every queue key: what the InfoNCE loss rewards) and ``other_beats_queue`` (the best *other* key of the batch
    beats every queue key: 1.0 means any current key outranks the whole queue, the shortcut)."""
    n = q.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=q.device)
    inb = q @ k.t()
    pos = inb.diag()
    other = inb.masked_fill(eye, float("-inf")).max(1).values
    to_queue = q @ queue.t()
    best_queue = to_queue.max(1).values
    return {
        "cos_positive": pos.mean().item(),
        "cos_other_in_batch": inb[~eye].mean().item(),
        "cos_queue": to_queue.mean().item(),
        "positive_beats_batch": (pos > other).float().mean().item(),
        "positive_beats_queue": (pos > best_queue).float().mean().item(),
        "other_beats_queue": (other > best_queue).float().mean().item(),
        "chance": 1.0 / n,
    }


def prototype_span_stats(z: torch.Tensor, prototypes: torch.Tensor) -> dict[str, float]:
    """z: [N, D] unit embeddings; prototypes: [K, D] unit rows. Returns ``n_prototypes`` K, ``dim`` D, the mean
    |score| z.c (``abs_score``), the mean over embeddings of the scores' std over the prototypes (``score_std``;
    0 = uniform predictions), the mean fraction of an embedding's norm inside the prototypes' span
    (``norm_in_span``; below 1 only when K < D or the prototypes are dependent) and the mean cosine between two
    different prototypes (``prototype_cos``). Two more locate a collapse that K > D allows: ``weak_sv`` and
    ``median_sv``, the smallest and the median singular value of the prototype matrix (a direction the prototypes
    have left has a small one), ``energy_on_weakest``, the mean fraction of z's squared norm along the right
    singular vector of the smallest singular value (1/D for isotropic z), and ``top_direction_share``, the share
    of the batch-centred embeddings' variance along their first principal direction (1: z varies along one line)."""
    s = z @ prototypes.t()
    k = prototypes.shape[0]
    cos = prototypes @ prototypes.t()
    # one SVD: sv descending; the rows of vh [min(K, D), D] are an orthonormal basis of the prototypes' span
    _, sv, vh = torch.linalg.svd(prototypes, full_matrices=False)
    centred_sv = torch.linalg.svdvals(z - z.mean(0))
    return {
        "n_prototypes": k,
        "dim": prototypes.shape[1],
        "abs_score": s.abs().mean().item(),
        "score_std": s.std(1).mean().item(),
        "norm_in_span": (z @ vh.t()).norm(dim=1).mean().item(),
        "weak_sv": sv[-1].item(),
        "median_sv": sv.median().item(),
        "energy_on_weakest": (z @ vh[-1]).pow(2).mean().item(),
        "top_direction_share": (centred_sv[0] ** 2 / centred_sv.pow(2).sum().clamp_min(1e-12)).item(),
        "prototype_cos": ((cos.sum() - cos.diagonal().sum()) / (k * k - k)).item(),
    }


def _device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


def measure_instance_retrieval(run_dir: Path, images: int) -> dict:
    """Top-1 instance retrieval of a run's frozen backbone features (any method; the last checkpoint, BN on running
    statistics as the probes use it) on two views of ``images`` training images drawn with ``RETRIEVAL_VIEWS``'s
    recipe at the run's scale (the same pairs for every run). A row: run, method, epoch, config_hash, images,
    views, ``instance_top1`` and ``chance``."""
    run = load_run(run_dir)
    views = training_views(load_recipe(RETRIEVAL_VIEWS, run.recipe.scale), images)
    dev = _device(run.method)
    with torch.no_grad():
        fa, fb = (run.method.features(views[k].to(dev), "backbone").float().cpu() for k in ("v1", "v2"))
    return {
        "run": str(run_dir),
        "method": run.recipe.method,
        "epoch": run.epoch,
        "config_hash": run.recipe.hash(),
        "images": images,
        "views": RETRIEVAL_VIEWS,
        "instance_top1": instance_retrieval_top1(fa, fb),
        "chance": 1.0 / images,
    }


def measure_moco_shortcut(run_dir: Path, batch: int) -> dict:
    """``moco_shortcut_stats`` of a MoCo run (any recipe built on ``methods.moco.MoCo``: v1, v2, +rotation; a
    ``UserError`` for another method) on one batch of its own training views, with queries and shuffled-BN keys
    computed as the training step does (train mode, key shuffle seeded 0) against the run's saved queue; adds
    ``positive_beats_batch_eval_bn`` (the same rate with BN on running statistics, so no batch statistics are shared
    between the two encoders' inputs) and ``z_std`` of the queries (``methods.base.output_std``)."""
    run = load_run(run_dir)
    m = run.method
    if not isinstance(m, MoCo):
        raise UserError(f"{run_dir}: method {run.recipe.method} is not MoCo", exit_code=2)
    dev = _device(m)
    views = {k: v.to(dev) for k, v in training_views(run.recipe, batch).items()}
    queue = m.queue.keys.clone()
    torch.manual_seed(0)  # the key shuffle
    with torch.no_grad():
        m.train()
        q, k = m.query(views["v1"]), m.key(views["v2"])
        out = moco_shortcut_stats(q, k, queue)
        out["z_std"] = output_std(q).item()
        m.eval()
        q, k = m.query(views["v1"]), F.normalize(m.head_k(m.backbone_k(views["v2"])), dim=1)
        out["positive_beats_batch_eval_bn"] = moco_shortcut_stats(q, k, queue)["positive_beats_batch"]
    return {"run": str(run_dir), "method": run.recipe.method, "config_hash": run.recipe.hash(), **out}


def measure_prototype_span(run_dir: Path, batch: int) -> dict:
    """``prototype_span_stats`` of a SwAV run (a ``UserError`` for another method): one batch of its first large
    crops (its own augmentations), embedded as the training step does (train-mode BN, L2-normalised projection),
    against its L2-normalised prototypes."""
    run = load_run(run_dir)
    m = run.method
    if run.recipe.method != "swav":
        raise UserError(f"{run_dir}: method {run.recipe.method} is not SwAV", exit_code=2)
    views = training_views(run.recipe, batch)
    first = views["v1"] if "v1" in views else views["g0"]  # two-view recipes, else multi-crop's first large crop
    m.train()
    with torch.no_grad():
        z = F.normalize(m.projector(m.backbone(first.to(_device(m)))), dim=1)
        stats = prototype_span_stats(z, F.normalize(m.prototypes.weight, dim=1))
    return {"run": str(run_dir), "method": run.recipe.method, "config_hash": run.recipe.hash(), **stats}
