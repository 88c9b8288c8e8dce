"""Command-level probes: each loads a run, evaluates, and returns result records (not yet stored)."""
from __future__ import annotations

import torch

from cssl_bench.data.augment import HFlip, Pipeline, ResizedCrop
from cssl_bench.data.datasets import ViewDataset, get_source
from cssl_bench.data.augment import SingleView
from cssl_bench.data.loaders import to_input
from cssl_bench.eval.features import LoadedRun, features
from cssl_bench.eval.knn import knn_eval, topk_accuracy
from cssl_bench.eval.linear import LinearProtocol, linear_probe, train_linear
from cssl_bench.results.store import make_record
from cssl_bench.train.loop import dataset_options


def records_for(run: LoadedRun, dataset: str, feature: str, protocol: dict, metrics: dict[str, float], extra: dict | None = None) -> list[dict]:
    r = run.recipe
    extra = {**({"augment": list(r.augment.looc_augment)} if r.augment.views == "looc" else {}), **(extra or {})}
    return [make_record(run_id=run.run_dir.name, method=r.method, dataset=dataset, pretrain_dataset=r.data.dataset, scale=r.scale,
                        backbone=r.model.backbone, epochs=run.epoch, batch=r.train.batch_size, seed=r.train.seed, feature=feature,
                        protocol=protocol, metric=m, value=v, config_hash=r.hash(), extra=extra) for m, v in metrics.items()]


def probe_knn(run: LoadedRun, dataset: str, k: int = 200, temperature: float = 0.1, feature: str | None = None) -> list[dict]:
    feature = feature or run.default_feature
    tf, ty = features(run, dataset, "train", feature)
    vf, vy = features(run, dataset, "test", feature)
    metrics = knn_eval(tf, ty, vf, vy, k, temperature)
    return records_for(run, dataset, feature, {"name": "knn", "k": k, "temperature": temperature}, metrics)


def _augmented_batches(run: LoadedRun, dataset: str, feature: str, p: LinearProtocol):
    """Per-epoch batches of features of random-resized-crop + flip views (the paper's probe training)."""
    src = get_source(dataset, "train", dataset_options(run.recipe))
    size = run.recipe.data.image_size
    ds = ViewDataset(src, SingleView(Pipeline([ResizedCrop(size, (0.08, 1.0)), HFlip()])), seed=p.seed)

    def batches(epoch):
        ds.set_epoch(epoch)
        g = torch.Generator().manual_seed(p.seed * 1000 + epoch)
        loader = torch.utils.data.DataLoader(ds, batch_size=p.batch_size, sampler=torch.randperm(len(ds), generator=g).tolist(), drop_last=True)
        for views, y, _ in loader:
            with torch.no_grad():
                f = run.method.features(to_input(views["v1"], run.recipe.model.channels_last), feature).float()
            yield f, y

    return batches, len(src) // p.batch_size, len(src.classes)


def probe_linear(run: LoadedRun, dataset: str, protocol: LinearProtocol, feature: str | None = None, metric_prefix: str = "linear") -> tuple[list[dict], object]:
    feature = feature or run.default_feature
    vf, vy = features(run, dataset, "test", feature)
    if protocol.augment:
        batches, spe, classes = _augmented_batches(run, dataset, feature, protocol)
        clf = train_linear(batches, vf.shape[1], classes, protocol, spe)
        with torch.no_grad():
            acc = topk_accuracy(clf(vf), vy)
        metrics = {"linear/top1": acc[1], "linear/top5": acc[5]}
    else:
        tf, ty = features(run, dataset, "train", feature)
        metrics, clf = linear_probe(tf, ty, vf, vy, protocol)
    metrics = {m.replace("linear/", f"{metric_prefix}/"): v for m, v in metrics.items()}
    return records_for(run, dataset, feature, protocol.record(), metrics), clf
