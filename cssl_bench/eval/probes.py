"""Command-level probes: each loads a run, evaluates, and returns result records (not yet stored).

Shared pieces for every probe module: ``records_for`` (the record layout of docs/records.md),
``source_of`` / ``subset`` (dataset splits, optionally a seeded subset), and ``linear_classifier``
(a linear probe trained once per run, dataset, feature and protocol and kept under
``RUN/features/``, so ``probe corruption`` and ``probe objectnet`` reuse the IN-100 probe that
``probe linear`` trained).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch

from cssl_bench import UserError
from cssl_bench.data.augment import HFlip, Pipeline, ResizedCrop, SingleView
from cssl_bench.data.datasets import DatasetOptions, ImageSource, ViewDataset, get_source
from cssl_bench.data.loader_base import to_input
from cssl_bench.eval.features import LoadedRun, cache_identity, features
from cssl_bench.eval.knn import check_knn_options, knn_eval, topk_accuracy
from cssl_bench.eval.linear import LinearClassifier, LinearProtocol, fit_linear, get_protocol, train_linear
from cssl_bench.results.store import make_record, plugin_provenance
from cssl_bench.train.loop import dataset_options


def data_options_record(recipe) -> dict:
    """``{"data_options": {...}}`` with the dataset options that differ from the defaults (an embedded dataset's
    size, seed or generator variant), or {} when none does: a record says which data it was measured on. A run
    pretrained on an embedded dataset always says its generator version (``embedded_version``, even at the
    default): records written before the key existed were measured on version 1 (docs/records.md)."""
    from dataclasses import asdict, fields

    opts, default = asdict(dataset_options(recipe)), asdict(DatasetOptions())
    changed = {
        f.name: opts[f.name] for f in fields(DatasetOptions) if f.name != "skip_bad" and opts[f.name] != default[f.name]
    }
    if str(recipe.data.dataset).startswith("embedded"):
        changed["embedded_version"] = opts["embedded_version"]
    return {"data_options": changed} if changed else {}


def pretrain_z_std(run: LoadedRun) -> dict:
    """The collapse monitor of the probed checkpoint (the last z_std its run logged by its step), for the records:
    {"pretrain_z_std": {"step", "value", "x_sqrt_dim"}}; empty for runs without one (supervised, older runs)."""
    from cssl_bench.collapse import checkpoint_z_std

    z = checkpoint_z_std(run.run_dir, run.step, getattr(run.method, "embedding_dim", None))
    return {"pretrain_z_std": z} if z else {}


def pretrain_loader(run: LoadedRun) -> dict:
    """The training loaders of the probed run (run.json ``train_loaders``: torchvision, or FFCV with how its file
    stores the images), for the records: {"pretrain_loader": [...]}; empty for runs from before it was kept."""
    used = run.info.get("train_loaders")
    return {"pretrain_loader": used} if used else {}


def pretrain_threads(run: LoadedRun) -> dict:
    """``{"pretrain_threads": n}``: the torch CPU threads the probed run was pre-trained with (run.json
    ``torch_threads``; a resumed run: its last part); empty for runs from before it was kept."""
    n = run.info.get("torch_threads")
    return {"pretrain_threads": n} if n else {}


def imported_source(run: LoadedRun) -> dict:
    """``{"source": {"file", "sha256", "format"}}`` for a run written by ``cssl-bench import`` (its run.json), the
    checkpoint the probed backbone came from; {} for a run pretrained here."""
    src = run.info.get("source")
    return {"source": src} if src else {}


def bn_record(run: LoadedRun) -> dict:
    """``{"init_bn": "data", "bn_estimate": {dataset, split, images, batch_size, seed}}`` for a copy of a run whose
    backbone's BN statistics ``eval.baseline.reestimate_bn`` re-estimated; {} for a run probed as it is."""
    bn = run.bn
    if not bn:
        return {}
    return {"init_bn": bn.get("stats", "data"), "bn_estimate": {k: v for k, v in bn.items() if k != "stats"}}


def records_for(
    run: LoadedRun,
    dataset: str,
    feature: str,
    protocol: dict,
    metrics: dict[str, float],
    extra: dict | None = None,
    ci95: dict[str, float] | None = None,
) -> list[dict]:
    """One record per metric; ``ci95`` gives the 95% half-width of the metrics that have one (few-shot)."""
    r = run.recipe
    looc = {"augment": list(r.augment.looc_augment), "variance_heads": r.augment.variance_heads}
    extra = {
        **(looc if r.augment.views == "looc" else {}),
        "params": dict(r.params),
        "precision": r.train.precision,
        **data_options_record(r),
        **pretrain_z_std(run),
        **pretrain_loader(run),
        **pretrain_threads(run),
        **imported_source(run),
        **plugin_provenance(r),
        **(extra or {}),
    }
    extra.update(bn_record(run))  # a copy with BN statistics re-estimated on data (eval.baseline): init_bn, bn_estimate
    out = []
    for m, v in metrics.items():
        ex = dict(extra)
        if ci95 and m in ci95:
            ex["ci95"] = round(float(ci95[m]), 4)
        out.append(
            make_record(
                run_id=run.run_dir.name,
                method=r.method,
                dataset=dataset,
                pretrain_dataset=run.info.get("pretrain_dataset") or r.data.dataset,  # set by `cssl-bench import`
                scale=r.scale,
                backbone=r.model.backbone,
                epochs=run.epoch,
                batch=r.train.batch_size,
                seed=r.train.seed,
                feature=feature,
                protocol=protocol,
                metric=m,
                value=v,
                config_hash=r.hash(),
                extra=ex,
            )
        )
    return out


def resolve_protocol(run: LoadedRun, protocol: LinearProtocol | str | None, default: str = "looc") -> LinearProtocol:
    """A protocol object as given, or the named protocol (``default`` when None) as the run's scale probes it
    (``LinearProtocol.for_scale``: augmentation on at paper scale only, the CPU scales train probes on cached
    centre-crop features; the paper's number of images at small and paper)."""
    if isinstance(protocol, LinearProtocol):
        return protocol
    return get_protocol(protocol or default).for_scale(run.recipe.scale)


def source_of(run: LoadedRun, dataset: str, split: str) -> ImageSource:
    return get_source(dataset, split, dataset_options(run.recipe))


class SubsetSource(ImageSource):
    """The images ``indices`` of ``source`` (labels and classes follow)."""

    def __init__(self, source: ImageSource, indices: np.ndarray):
        self.source, self.indices = source, np.asarray(indices, np.int64)
        self.labels, self.classes = np.asarray(source.labels)[self.indices], source.classes
        self.name = f"{getattr(source, 'name', 'source')}[{len(self.indices)}]"

    def image(self, i):
        return self.source.image(int(self.indices[i]))


def subset(source: ImageSource, limit: int | None, seed: int = 0) -> ImageSource:
    """A seeded random subset of ``limit`` images (kept in index order); the whole source when ``limit`` is None or not smaller."""
    if limit is None or limit >= len(source):
        return source
    if limit <= 0:
        raise UserError(f"--limit must be positive, got {limit}", exit_code=2)
    idx = np.sort(np.random.default_rng([seed, len(source)]).choice(len(source), size=limit, replace=False))
    return SubsetSource(source, idx)


def class_columns(classes: list[str], target_classes: list[str], aliases: dict[str, str] | None = None) -> list[int]:
    """For each name in ``classes``, its index in ``target_classes`` (matched by name, or through
    ``aliases``: name -> target name, used both ways). A class without a match is an error."""
    index = {c: i for i, c in enumerate(target_classes)}
    aliases = aliases or {}
    back = {v: k for k, v in aliases.items()}
    cols = []
    for c in classes:
        for cand in (c, aliases.get(c), back.get(c)):
            if cand is not None and cand in index:
                cols.append(index[cand])
                break
        else:
            raise UserError(
                f"class {c!r} has no counterpart among the probe's {len(target_classes)} classes "
                f"(e.g. {', '.join(target_classes[:3])}, ...)"
            )
    return cols


class RelabelledSource(ImageSource):
    """``source`` with labels re-expressed as indices into ``target_classes`` (matched by class name)."""

    def __init__(self, source: ImageSource, target_classes: list[str], aliases: dict[str, str] | None = None):
        cols = np.asarray(class_columns(list(source.classes), list(target_classes), aliases), np.int64)
        self.source, self.classes = source, list(target_classes)
        self.labels = (
            cols[np.asarray(source.labels, np.int64)] if len(source.labels) else np.asarray(source.labels, np.int64)
        )
        self.name = getattr(source, "name", "source")

    def image(self, i):
        return self.source.image(i)


def probe_knn(
    run: LoadedRun, dataset: str, k: int | None = None, temperature: float = 0.1, feature: str | None = None
) -> list[dict]:
    """Weighted cosine kNN; ``k`` None: 20 for sets of 100 classes or more, else 200 (docs/protocols.md, section 2)."""
    check_knn_options(k, temperature)
    feature = feature or run.default_feature
    tf, ty = features(run, dataset, "train", feature)
    vf, vy = features(run, dataset, "test", feature)
    if k is None:
        k = 20 if len(source_of(run, dataset, "train").classes) >= 100 else 200
    metrics = knn_eval(tf, ty, vf, vy, k, temperature)
    return records_for(run, dataset, feature, {"name": "knn", "k": k, "temperature": temperature}, metrics)


def _augmented_batches(run: LoadedRun, dataset: str, feature: str, p: LinearProtocol):
    """Per-epoch batches of features of random-resized-crop + flip views (the paper's probe training); returns
    (batches, steps per epoch, classes, training images)."""
    src = source_of(run, dataset, "train")
    size = run.recipe.data.image_size
    ds = ViewDataset(src, SingleView(Pipeline([ResizedCrop(size, (0.08, 1.0)), HFlip()])), seed=p.seed)
    bs = min(p.batch_size, len(src))

    def batches(epoch):
        ds.set_epoch(epoch)
        g = torch.Generator().manual_seed(p.seed * 1000 + epoch)
        loader = torch.utils.data.DataLoader(
            ds,
            batch_size=bs,
            sampler=torch.randperm(len(ds), generator=g).tolist(),
            drop_last=True,
            num_workers=run.recipe.data.workers,
        )
        device = next(run.method.parameters()).device
        for views, y, _ in loader:
            with torch.no_grad():
                f = (
                    run.method.features(to_input(views["v1"].to(device), run.recipe.model.channels_last), feature)
                    .float()
                    .cpu()
                )
            yield f, y

    return batches, len(src) // bs, len(src.classes), len(src)


def _classifier_path(run: LoadedRun, dataset: str, feature: str, p: LinearProtocol):
    blob = json.dumps(
        {
            **cache_identity(run),
            "dataset": dataset,
            "feature": feature,
            "size": run.recipe.data.image_size,
            "protocol": p.record(),
        },
        sort_keys=True,
    )
    return run.run_dir / "features" / f"linear-{hashlib.sha256(blob.encode()).hexdigest()[:16]}.pt"


def linear_classifier(run: LoadedRun, dataset: str, p: LinearProtocol, feature: str | None = None) -> LinearClassifier:
    """The linear probe of ``dataset``'s train split (trained once, then loaded from ``RUN/features/``).

    Its output has one logit per class of the dataset's train split, in the source's class order.
    """
    feature = feature or run.default_feature
    path = _classifier_path(run, dataset, feature, p)
    if path.exists():
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
            clf = LinearClassifier(sd["fc.weight"].shape[1], sd["fc.weight"].shape[0])
            clf.load_state_dict(sd)
            return clf.eval()
        except Exception:  # noqa: BLE001  (a damaged cache file is retrained below)
            path.unlink(missing_ok=True)
    if p.augment:  # one scan of the training split (a folder of a million files at paper scale) serves it all
        batches, spe, classes, n_train = _augmented_batches(run, dataset, feature, p)
        dim = features(run, dataset, "test", feature)[0].shape[1]
        clf = train_linear(batches, dim, classes, p.for_train_size(n_train), spe)
    else:
        tf, ty = features(run, dataset, "train", feature)
        if len(tf) == 0:
            raise UserError(f"{dataset} has no training images")
        clf = fit_linear(tf, ty, p, len(source_of(run, dataset, "train").classes))
    clf.eval()
    try:
        from cssl_bench.train.checkpoint import save_checkpoint

        save_checkpoint(clf.state_dict(), path, keep_previous=False)
    except OSError:
        pass
    return clf


@torch.no_grad()
def accuracy(clf: LinearClassifier, f: torch.Tensor, y: torch.Tensor) -> dict[int, float]:
    return topk_accuracy(clf(f), y)


def probe_linear(
    run: LoadedRun,
    dataset: str,
    protocol: LinearProtocol | str | None = None,
    feature: str | None = None,
    metric_prefix: str = "linear",
) -> tuple[list[dict], LinearClassifier]:
    """Linear probe (docs/protocols.md, section 2): trained on the train split, top-1/top-5 on the test split."""
    feature = feature or run.default_feature
    protocol = resolve_protocol(run, protocol, "moco")
    clf = linear_classifier(run, dataset, protocol, feature)
    vf, vy = features(run, dataset, "test", feature)
    acc = accuracy(clf, vf, vy)
    metrics = {f"{metric_prefix}/top1": acc[1], f"{metric_prefix}/top5": acc[5]}
    return records_for(run, dataset, feature, protocol.record(), metrics), clf


# The other probes live in their own modules; they are reachable from here too (``probes.probe_rotation``
# ...), one place for callers such as ``reproduce``. Lazy, because those modules import this one.
_PROBE_MODULES = {
    "probe_rotation": "rotation",
    "probe_fewshot": "fewshot",
    "probe_corruption": "corruption",
    "probe_objectnet": "objectnet",
    "probe_finegrained": "finegrained",
}


def __getattr__(name: str):
    if name in _PROBE_MODULES:
        import importlib

        return getattr(importlib.import_module(f"cssl_bench.eval.{_PROBE_MODULES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
