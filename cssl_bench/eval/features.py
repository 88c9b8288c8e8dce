"""Frozen features of a finished (or partial) run, extracted once and cached.

``load_run`` rebuilds the method of a run directory from its ``config.yaml`` and loads a checkpoint
into it (refusing checkpoints of another method or backbone). ``extract`` computes features of a
dataset split in evaluation mode with a deterministic transform; the result is cached under
``RUN/features/`` keyed by checkpoint step, dataset, split, feature kind and transform, so a probe on
cached features takes seconds. A run whose BN statistics were re-estimated on data
(``eval.baseline.reestimate_bn``, ``LoadedRun.bn``) has cache keys of its own.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cssl_bench import UserError
from cssl_bench.config import Recipe, recipe_from_dict
from cssl_bench.data.augment import CenterResize
from cssl_bench.data.datasets import ImageSource, get_source
from cssl_bench.data.loader_base import to_input
from cssl_bench.data.loaders import eval_loader
from cssl_bench.eval import progress
from cssl_bench.methods import build_method
from cssl_bench.train.checkpoint import load_checkpoint, read_run
from cssl_bench.train.loop import dataset_options


@dataclass
class LoadedRun:
    run_dir: Path
    recipe: Recipe
    method: torch.nn.Module
    checkpoint: Path
    epoch: int | None
    step: int
    info: dict
    # None: the checkpoint's own BN statistics. A copy made by ``eval.baseline.reestimate_bn`` holds what its
    # backbone's BN statistics were re-estimated on ({"stats": "data", "dataset", "images", ...}); it keys the
    # caches under RUN/features/ apart from the checkpoint's own.
    bn: dict | None = None

    @property
    def default_feature(self) -> str:
        f = getattr(self.method, "default_feature", None)
        return f() if f else "backbone"


def checkpoint_path(run_dir: Path, epoch: int | None = None) -> Path:
    name = "last.pt" if epoch is None else f"epoch_{epoch}.pt"
    return Path(run_dir) / "checkpoints" / name


def load_run(run_dir: Path, epoch: int | None = None) -> LoadedRun:
    run_dir = Path(run_dir)
    cfg, info = read_run(run_dir)
    recipe = recipe_from_dict(cfg)
    path = checkpoint_path(run_dir, epoch)
    if not path.exists() and epoch is None and (run_dir / "checkpoints" / "prev.pt").exists():
        path = run_dir / "checkpoints" / "prev.pt"
    state = load_checkpoint(path)
    if state.get("method") != recipe.method or state.get("backbone") != recipe.model.backbone:
        raise UserError(
            f"checkpoint {path} is of {state.get('method')}/{state.get('backbone')}, but the run is {recipe.method}/{recipe.model.backbone}"
        )
    n_classes = state["model"]["classifier.weight"].shape[0] if "classifier.weight" in state["model"] else 10
    method = build_method(recipe, num_classes=n_classes)
    try:
        method.load_state_dict(state["model"])
    except RuntimeError as e:
        raise UserError(f"checkpoint {path} does not match the run's model ({str(e).splitlines()[0][:160]})") from None
    method.to(eval_device()).eval()
    epoch = None if state["epoch"] is None else int(state["epoch"])  # None: an imported backbone of unknown epochs
    return LoadedRun(run_dir, recipe, method, path, epoch, int(state["step"]), info)


def eval_device() -> torch.device:
    """Where frozen features are computed: the GPU when there is one (``$CSSL_BENCH_EVAL_DEVICE`` overrides)."""
    name = os.environ.get("CSSL_BENCH_EVAL_DEVICE")
    if name:
        return torch.device(name)
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _in_memory(source) -> bool:
    """Sources backed by an array in memory (or wrapping one): loader workers would only add start-up cost."""
    while source is not None:
        if isinstance(getattr(source, "images", None), np.ndarray):
            return True
        source = getattr(source, "source", None)
    return False


def eval_transform(image_size: int, crop_frac: float | None = None) -> CenterResize:
    """Resize + centre crop. Default crop fraction: 224/256 for large images, 1 (no crop) at 64 px and less."""
    if crop_frac is None:
        crop_frac = 1.0 if image_size <= 64 else 0.875
    return CenterResize(image_size, crop_frac)


@torch.no_grad()
def compute_features(
    method,
    source: ImageSource,
    kind: str,
    image_size: int,
    channels_last: bool = True,
    batch_size: int = 256,
    transform=None,
    workers: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features [N, D] (float32, on the CPU) and labels [N] of every image of ``source``, in order, computed
    in evaluation mode on the method's device after the deterministic ``transform``."""
    method.eval()
    device = next(method.parameters()).device
    transform = transform or eval_transform(image_size)
    feats, labels = [], []
    name = getattr(source, "name", None)
    with progress.task(
        f"features ({kind}{', ' + name if isinstance(name, str) else ''})", -(-len(source) // batch_size)
    ) as advance:
        for x, y in eval_loader(source, transform, batch_size, workers):
            feats.append(method.features(to_input(x.to(device, non_blocking=True), channels_last), kind).float().cpu())
            labels.append(y)
            advance()
    return torch.cat(feats), torch.cat(labels)


def cache_identity(run: LoadedRun) -> dict:
    """What identifies the probed model in a cache key: checkpoint and step, plus ``bn`` for a copy with
    re-estimated BN statistics (absent otherwise, so the keys of existing caches stay as they were)."""
    return {"step": run.step, "ckpt": run.checkpoint.name, **({"bn": run.bn} if run.bn else {})}


def _cache_key(run: LoadedRun, dataset: str, split: str, kind: str, extra: dict) -> str:
    blob = json.dumps(
        {
            **cache_identity(run),
            "dataset": dataset,
            "split": split,
            "kind": kind,
            "size": run.recipe.data.image_size,
            **extra,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# Derived tasks that show the same images as another dataset's split, with other labels: their features
# are those of the other split (extracted once), their labels their own.
SAME_IMAGES = {
    ("embedded-color", "train"): "embedded",
    ("embedded-color", "test"): "embedded",
    ("embedded-fine", "train"): "embedded",
    ("embedded-fine", "test"): "embedded",
    ("embedded-shift", "train"): "embedded",
}


def features(
    run: LoadedRun,
    dataset: str,
    split: str,
    kind: str | None = None,
    source: ImageSource | None = None,
    transform=None,
    cache_tag: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cached features [N, D] and labels [N] of ``dataset``'s ``split`` (or of ``source``, identified by ``cache_tag``)."""
    kind = kind or run.default_feature
    if source is None and transform is None and not cache_tag and (dataset, split) in SAME_IMAGES:
        f, _ = features(run, SAME_IMAGES[(dataset, split)], split, kind)
        labels = torch.from_numpy(np.asarray(get_source(dataset, split, dataset_options(run.recipe)).labels, np.int64))
        return f, labels
    key = _cache_key(run, dataset, split, kind, cache_tag or {})
    path = run.run_dir / "features" / f"{key}.pt"
    if path.exists():
        try:
            d = torch.load(path, map_location="cpu", weights_only=True)
            return d["features"], d["labels"]
        except Exception:
            path.unlink(missing_ok=True)
    if source is None:
        source = get_source(dataset, split, dataset_options(run.recipe))
    workers = 0 if _in_memory(source) else run.recipe.data.workers
    f, y = compute_features(
        run.method,
        source,
        kind,
        run.recipe.data.image_size,
        run.recipe.model.channels_last,
        transform=transform,
        workers=workers,
    )
    try:
        from cssl_bench.train.checkpoint import save_checkpoint

        save_checkpoint({"features": f, "labels": y}, path, keep_previous=False)
    except OSError:
        pass  # the cache is an optimisation: a read-only run directory still evaluates
    return f, y
