"""Corruption robustness, IN-C-100 style (LooC Table 3; Hendrycks & Dietterich, ICLR 2019).

The linear probe of the clean dataset (IN-100 at paper scale, ``embedded`` at the CPU scales; the
same cached classifier ``probe linear`` trains) is applied to the test images under each of the 15
corruptions at each severity 1-5. Records: ``corruption/<name>/s<k>`` (top-1, percent), then the group
means ``corruption/noise|blur|weather|digital``, ``corruption/all`` (mean over every corruption and
severity) and ``corruption/d>3`` (mean over severities 4 and 5), see
``cssl_bench.data.corruptions.group_means``. With a subset of corruptions or severities the means are
over what was evaluated, and the subset is in the record's protocol.

Two sources of corrupted images:
- ``corrupted=None`` (the CPU-scale path): the test split is corrupted on the fly after the
  evaluation resize + centre crop, deterministically from ``seed``; corrupted image sets that fit in
  64 MB are cached under ``$CSSL_BENCH_CACHE/corruptions`` and shared by every run, and each run's
  features of them under ``RUN/features/``.
- ``corrupted=NAME``: a folder in ImageNet-C's layout ``CORRUPTION/SEVERITY/CLASS/*.JPEG``, either
  ``imagefolder:PATH`` or a registered dataset (``imagenet-c-100``) whose split is
  ``"CORRUPTION/SEVERITY"``. Its classes are matched to the probe's classes by name.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from cssl_bench import UserError
from cssl_bench.data import corruptions as C
from cssl_bench.data.datasets import FolderSource, ImageSource, get_source
from cssl_bench.data.embedded import cache_dir
from cssl_bench.eval import progress
from cssl_bench.eval.features import LoadedRun, eval_transform, features
from cssl_bench.eval.linear import LinearProtocol
from cssl_bench.eval.probes import (
    RelabelledSource,
    accuracy,
    linear_classifier,
    records_for,
    resolve_protocol,
    source_of,
    subset,
)
from cssl_bench.train.loop import dataset_options

# ImageNet-C-style datasets -> the clean dataset whose linear probe scores them.
CLEAN_OF = {"imagenet-c-100": "imagenet100", "imagenet-c": "imagenet"}


def corrupted_folder_source(name: str, corruption: str, severity: int, options) -> ImageSource:
    """Split ``corruption/severity`` of an ImageNet-C-style dataset (``imagefolder:ROOT`` or a registered name)."""
    if name.startswith("imagefolder:"):
        root = Path(os.path.expanduser(name.split(":", 1)[1])) / corruption / str(severity)
        if not root.is_dir():
            raise UserError(f"{root} does not exist: an ImageNet-C folder holds CORRUPTION/SEVERITY/CLASS/ images")
        return FolderSource(f"{name}/{corruption}/{severity}", root, skip_bad=options.skip_bad)
    return get_source(name, f"{corruption}/{severity}", options)


def _identity(img: torch.Tensor) -> torch.Tensor:
    return img


def stored_corrupted_transform(image_size: int):
    """The evaluation transform of stored ImageNet-C-style images: they are already the clean test images'
    resize (256) + centre crop (224), corrupted, so only a centre crop to ``image_size`` follows (Hendrycks'
    ImageNet-C test: CenterCrop(224)); the clean ``eval_transform`` would resize and crop them a second time.
    At another ``image_size`` the whole stored crop is resized (crop fraction 1)."""
    return eval_transform(image_size, crop_frac=1.0)


def probe_corruption(
    run: LoadedRun,
    dataset: str,
    protocol: LinearProtocol | str | None = None,
    feature: str | None = None,
    corruptions: list[str] | None = None,
    severities: list[int] | None = None,
    limit: int | None = None,
    seed: int = 0,
    min_size: int = 64,
    corrupted: str | None = None,
) -> list[dict]:
    """Per-corruption, per-severity top-1 of ``dataset``'s linear probe, then the group means.

    ``dataset`` is the clean dataset (its test split is corrupted on the fly unless ``corrupted`` names
    an ImageNet-C-style dataset), or an ImageNet-C-style dataset itself (``imagenet-c-100``), scored by
    the probe of its clean counterpart (``CLEAN_OF``). Records carry ``corrupted or dataset``.
    """
    feature = feature or run.default_feature
    if corrupted is None and dataset in CLEAN_OF:
        dataset, corrupted = CLEAN_OF[dataset], dataset
    protocol = resolve_protocol(run, protocol)
    corruptions = list(corruptions or C.CORRUPTIONS)
    severities = list(severities or C.SEVERITIES)
    clf = linear_classifier(run, dataset, protocol, feature)
    train_classes = source_of(run, dataset, "train").classes
    size = run.recipe.data.image_size
    opts = dataset_options(run.recipe)
    acc: dict[tuple[str, int], float] = {}
    if corrupted is None:
        clean = subset(source_of(run, dataset, "test"), limit, seed)
        transform = eval_transform(size)
        image_key = {
            "dataset": dataset,
            "options": repr(opts),
            "limit": limit,
            "subset_seed": seed,
            "seed": seed,
            "min_size": min_size,
            "size": size,
            "crop": transform.crop_frac,
            "version": 1,
        }
    with progress.task(
        f"corruptions ({len(corruptions)} x {len(severities)} severities)", len(corruptions) * len(severities)
    ) as advance:
        for c in corruptions:
            for s in severities:
                if corrupted is None:
                    src = C.cached_corrupted(
                        C.CorruptedSource(clean, c, s, seed, min_size, transform),
                        {**image_key, "c": c, "s": s},
                        cache_dir() / "corruptions",
                    )
                    tag = {"corruption": c, "severity": s, "seed": seed, "limit": limit, "min_size": min_size}
                    f, y = features(run, dataset, "test", feature, source=src, transform=_identity, cache_tag=tag)
                else:
                    src = subset(
                        RelabelledSource(corrupted_folder_source(corrupted, c, s, opts), train_classes), limit, seed
                    )
                    tag = {
                        "corrupted": corrupted,
                        "corruption": c,
                        "severity": s,
                        "limit": limit,
                        "subset_seed": seed,
                        "crop": 1.0,
                    }
                    f, y = features(
                        run,
                        dataset,
                        "test",
                        feature,
                        source=src,
                        transform=stored_corrupted_transform(size),
                        cache_tag=tag,
                    )
                acc[(c, s)] = accuracy(clf, f, y)[1]
                advance()
    metrics = {f"corruption/{c}/s{s}": v for (c, s), v in acc.items()}
    metrics.update({f"corruption/{g}": v for g, v in C.group_means(acc).items()})
    record = {
        "name": "corruption",
        "source": corrupted or "on-the-fly",
        "corruptions": corruptions,
        "severities": severities,
        "high_severities": list(C.HIGH_SEVERITIES),
        "limit": limit,
        "seed": seed,
        "min_size": min_size if corrupted is None else None,
        "complete": len(corruptions) == len(C.CORRUPTIONS) and len(severities) == len(C.SEVERITIES),
        "linear": protocol.record(),
    }
    return records_for(run, corrupted or dataset, feature, record, metrics)


def corruption_table(records: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Rows corruption x columns severity (and mean) from ``corruption/<name>/s<k>`` records, for display."""
    per: dict[str, dict[int, float]] = {}
    for r in records:
        parts = r["metric"].split("/")
        if len(parts) == 3:
            per.setdefault(parts[1], {})[int(parts[2][1:])] = r["value"]
    sev = sorted({s for d in per.values() for s in d})
    rows = [
        [c] + [f"{per[c][s]:.1f}" if s in per[c] else "" for s in sev] + [f"{np.mean(list(per[c].values())):.1f}"]
        for c in C.CORRUPTIONS
        if c in per
    ]
    return ["corruption"] + [f"s{s}" for s in sev] + ["mean"], rows
