"""The FFCV path: ``.beton`` files (Leclerc et al., FFCV, CVPR 2023) and a multi-view training loader.

Design (measured in ``benchmarks/loaders.py``):

- ``write_beton`` stores a dataset split with FFCV's ``DatasetWriter``: fields ``image``
  (``RGBImageField``, JPEG at a chosen quality, or raw pixels; optionally downscaled so the longer
  side is at most ``max_side``), ``label`` and ``index``. A JSON sidecar ``OUT.beton.json`` records
  the dataset, split, options, classes, storage settings and the unreadable files found.
- ``Beton`` opens a file with FFCV's ``Reader``, checks it is whole and matches its dataset
  (length, labels, classes, image size: one ``UserError`` line otherwise) and decodes a batch of
  items with libffcv's libjpeg-turbo ``imdecode`` inside a numba kernel compiled with
  ``cache=True`` (no GIL, cached on disk under ``NUMBA_CACHE_DIR``, so the JIT cost is paid once
  per machine, not in every process as with FFCV's generated pipelines).
- ``FFCVViewLoader`` walks the batches of ``EpochSampler`` (the same order as the torchvision path),
  decodes each batch and computes the views with ``cssl_bench.data.batched``: the same view-recipe
  objects, the same per-item generators ``(seed, epoch, index)``, hence the same parameters (LooC's
  shared ones included) and the same views within a grey level. Batches are prepared by ``workers``
  threads ahead of the training step.

The batch contract is ``cssl_bench.data.loader_base``'s, as the torchvision path's: ``(views: dict[str, uint8
[B,3,H,W]], labels int64 [B], index int64 [B])``. This module never imports the torchvision path
(``cssl_bench.data.loaders``); ``cssl_bench.data.train_loader`` chooses between the two.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import re
import sys
import threading
import weakref
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from cssl_bench import UserError
from cssl_bench.config import EMBEDDED_VARIANTS
from cssl_bench.data.datasets import DatasetOptions, ImageSource
from cssl_bench.data.embedded import cache_dir
from cssl_bench.data.loader_base import EpochSampler, prepare_numba

FORMAT = "cssl-bench-beton/1"
INSTALL_HINT = "install it with `make ffcv` (or `bash scripts/install_ffcv.sh .venv/bin`)"


def ffcv_installed() -> bool:
    """Whether ffcv and numba can be imported (checked without importing them: that costs seconds)."""
    return importlib.util.find_spec("ffcv") is not None and importlib.util.find_spec("numba") is not None


def ffcv_dir() -> Path:
    """Where ``.beton`` files are looked for and written by default: ``$CSSL_BENCH_FFCV_DIR`` or ``CACHE/ffcv``."""
    return Path(os.environ.get("CSSL_BENCH_FFCV_DIR") or cache_dir() / "ffcv")


def options_key(name: str, options: DatasetOptions) -> dict:
    """The dataset options that change the images or labels (recorded in the sidecar, part of the file name)."""
    if name.startswith("embedded"):
        default = DatasetOptions()  # generator variants join the key only when set: the defaults keep the older keys
        return {
            "embedded_size": options.embedded_size,
            "embedded_train": options.embedded_train,
            "embedded_test": options.embedded_test,
            "embedded_seed": options.embedded_seed,
            **{k: getattr(options, k) for k in EMBEDDED_VARIANTS if getattr(options, k) != getattr(default, k)},
        }
    return {}


def default_beton_path(name: str, split: str, options: DatasetOptions) -> Path:
    """``ffcv_dir()/NAME-SPLIT[-KEY].beton``; names with paths (``imagefolder:PATH``) are hashed."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
    if name.startswith("imagefolder:"):
        safe = (
            "imagefolder_"
            + hashlib.sha256(str(Path(name.split(":", 1)[1]).expanduser().resolve()).encode()).hexdigest()[:12]
        )
    key = options_key(name, options)
    suffix = "-" + "-".join(str(v) for v in key.values()) if key else ""
    return ffcv_dir() / f"{safe}-{split.replace('/', '_')}{suffix}.beton"


def sidecar_path(beton: Path) -> Path:
    return Path(str(beton) + ".json")


def _labels_digest(labels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(np.asarray(labels, np.int64)).tobytes()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# writing


class _WriterView:
    """What FFCV's writer iterates: (HWC uint8 image, label, index, ok). Unreadable files become a
    32x32 black image with ok=0 (counted, then reported or skipped by ``write_beton``)."""

    def __init__(self, source: ImageSource):
        self.source = source

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        bad = getattr(self.source, "bad", None)
        n_bad = len(bad) if bad is not None else 0
        ok = 1
        try:
            img = self.source.image(i)
        except Exception:  # counted and reported by write_beton; an exception here would hang FFCV's writer
            img, ok = torch.zeros(3, 32, 32, dtype=torch.uint8), 0
        if bad is not None and len(bad) > n_bad:  # a source that skips bad files itself (skip_bad=True)
            ok = 0
        return img.permute(1, 2, 0).contiguous().numpy(), int(self.source.labels[i]), int(i), ok


def write_beton(
    source: ImageSource,
    out: Path,
    *,
    dataset: str,
    split: str,
    options: DatasetOptions | None = None,
    jpeg_quality: int = 90,
    max_side: int | None = None,
    raw: bool = False,
    skip_bad: bool = False,
    workers: int = 2,
    progress: bool = False,
) -> dict:
    """Write ``source`` to ``out`` (atomically: a temporary file renamed at the end) plus its sidecar.

    Unreadable images are counted; unless ``skip_bad`` the file is not kept and a ``UserError`` names
    them. With ``skip_bad`` they are stored as black 32x32 images (as the torchvision path reads them)
    and listed in the sidecar. Returns the sidecar's content."""
    prepare_numba()
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    if not 1 <= jpeg_quality <= 100:
        raise UserError(f"--quality must be in 1..100 (got {jpeg_quality})", exit_code=2)
    if max_side is not None and max_side < 8:
        raise UserError(f"--max-side must be at least 8 (got {max_side})", exit_code=2)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    fields = {
        "image": RGBImageField(write_mode="raw" if raw else "jpg", max_resolution=max_side, jpeg_quality=jpeg_quality),
        "label": IntField(),
        "index": IntField(),
        "ok": IntField(),
    }
    try:
        writer = DatasetWriter(str(tmp), fields, num_workers=max(1, workers))
        import ffcv.writer as fw

        real = fw.tqdm  # FFCV's writer always draws a progress bar; silence it unless asked
        fw.tqdm = functools.partial(real, disable=not progress)
        try:
            writer.from_indexed_dataset(_WriterView(source))
        finally:
            fw.tqdm = real
        from ffcv.reader import Reader

        r = Reader(str(tmp))
        ok = r.metadata[f"f{list(r.handlers).index('ok')}"]
        bad = [int(i) for i in np.flatnonzero(ok == 0)]
        files = getattr(source, "files", None)
        bad_names = [str(files[i]) if files is not None else f"#{i}" for i in bad]
        if bad and not skip_bad:
            raise UserError(
                f"{len(bad)} unreadable image(s) in {dataset}/{split} (e.g. {', '.join(bad_names[:3])}); "
                f"pass --skip-bad (to `data convert` or `pretrain`) to store them as black images and go on"
            )
        meta = {
            "format": FORMAT,
            "dataset": dataset,
            "split": split,
            "n": len(source),
            "classes": list(source.classes),
            "labels_sha": _labels_digest(source.labels),
            "options": options_key(dataset, options or DatasetOptions()),
            "write_mode": "raw" if raw else "jpg",
            "jpeg_quality": None if raw else jpeg_quality,
            "max_side": max_side,
            "bad": bad,
            "bad_files": bad_names[:100],
        }
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    side = sidecar_path(out)
    tmp_side = side.with_name(side.name + f".tmp-{os.getpid()}")
    tmp_side.write_text(json.dumps(meta, indent=1))
    os.replace(tmp_side, side)
    return meta


# ----------------------------------------------------------------------------------------------
# reading


def _expected_size(h: int, w: int, max_side: int | None) -> tuple[int, int]:
    """(H, W) after FFCV's writer downscales so the longer side is at most ``max_side`` (its formula)."""
    if not max_side:
        return h, w
    ratio = max_side / max(h, w)
    if ratio >= 1:
        return h, w
    nw, nh = (ratio * np.array([w, h])).astype(int)
    return int(nh), int(nw)


def read_sidecar(path: Path) -> dict:
    """The JSON sidecar of a ``.beton`` ({} when it is missing or unreadable)."""
    try:
        return json.loads(sidecar_path(Path(path)).read_text())
    except (OSError, ValueError):
        return {}


def stored_as(meta: dict | None, modes: np.ndarray | None = None) -> dict:
    """How a ``.beton`` stores its images: ``{"storage": "jpg" | "raw", "jpeg_quality", "max_side"}`` from its
    sidecar ``meta`` (or, without one, from the images' FFCV modes: 0 = JPEG). JPEG storage changes the pixels,
    so a run records it (``train_loaders`` in run.json, ``pretrain_loader`` in records)."""
    meta = meta or {}
    mode = meta.get("write_mode") or ("jpg" if modes is None or (np.asarray(modes) == 0).any() else "raw")
    return {
        "storage": mode,
        "jpeg_quality": meta.get("jpeg_quality") if mode == "jpg" else None,
        "max_side": meta.get("max_side"),
    }


class Beton:
    """An open ``.beton``: metadata arrays and ``decode(indices)`` -> list of uint8 [3, H, W] tensors."""

    def __init__(self, path: Path):
        prepare_numba()
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"FFCV file {self.path} does not exist; write it with `cssl-bench data convert`")
        size = self.path.stat().st_size
        try:
            from ffcv.reader import Reader

            r = Reader(str(self.path))
            names = list(r.handlers)
            meta = r.metadata
            alloc = r.alloc_table
        except UserError:
            raise
        except Exception as e:  # a truncated or foreign file fails inside FFCV's reader in many ways
            raise UserError(
                f"FFCV file {self.path} is truncated or not a .beton ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
            ) from None
        for f in ("image", "label"):
            if f not in names:
                raise UserError(
                    f"FFCV file {self.path} has no {f!r} field (fields: {', '.join(names)}); rewrite it with `cssl-bench data convert`"
                )
        if len(alloc) and int((alloc["ptr"] + alloc["size"]).max()) > size:
            raise UserError(
                f"FFCV file {self.path} is truncated ({size} bytes; its index points to "
                f"{int((alloc['ptr'] + alloc['size']).max())}); rewrite it with `cssl-bench data convert`"
            )
        img = meta[f"f{names.index('image')}"]
        self.n = int(r.num_samples)
        self.labels = np.asarray(meta[f"f{names.index('label')}"], np.int64).copy()
        self.index = np.asarray(meta[f"f{names.index('index')}"], np.int64).copy() if "index" in names else None
        self.heights = img["height"].astype(np.int64)
        self.widths = img["width"].astype(np.int64)
        self.modes = img["mode"].astype(np.uint8)
        self.ptrs = img["data_ptr"].astype(np.uint64)
        order = np.argsort(alloc["ptr"])
        sorted_ptr = alloc["ptr"][order]
        pos = np.searchsorted(sorted_ptr, self.ptrs)
        if (
            len(alloc) == 0
            or (pos >= len(sorted_ptr)).any()
            or (sorted_ptr[np.minimum(pos, len(sorted_ptr) - 1)] != self.ptrs).any()
        ):
            raise UserError(
                f"FFCV file {self.path} is damaged (image pointers not in its allocation table); rewrite it"
            )
        self.sizes = alloc["size"][order][pos].astype(np.uint64)
        self.data = np.memmap(self.path, dtype=np.uint8, mode="r")
        side = sidecar_path(self.path)
        self.meta = json.loads(side.read_text()) if side.is_file() else None
        self.storage = stored_as(self.meta, self.modes)

    def check(self, source: ImageSource, dataset: str | None = None, split: str | None = None) -> None:
        """One ``UserError`` line unless this file holds ``source``: same length, labels, classes, image size."""
        where = f"FFCV file {self.path}"
        fix = "rewrite it with `cssl-bench data convert` (or pass --loader torchvision)"
        if self.n != len(source):
            raise UserError(f"{where} has {self.n} images but {dataset or 'the dataset'} has {len(source)}; {fix}")
        if self.index is not None and not np.array_equal(self.index, np.arange(self.n)):
            raise UserError(f"{where} stores its images out of order; {fix}")
        if not np.array_equal(self.labels, np.asarray(source.labels, np.int64)):
            raise UserError(
                f"{where} does not match {dataset or 'the dataset'}: {int((self.labels != source.labels).sum())} labels differ; {fix}"
            )
        m = self.meta or {}
        if m:
            if m.get("format") != FORMAT:
                raise UserError(f"{where} was written by another version ({m.get('format')}); {fix}")
            if dataset and (m.get("dataset"), m.get("split")) != (dataset, split or m.get("split")):
                raise UserError(f"{where} holds {m.get('dataset')}/{m.get('split')}, not {dataset}/{split}; {fix}")
            if list(m.get("classes", [])) != list(source.classes):
                raise UserError(
                    f"{where} has {len(m.get('classes', []))} classes, {dataset or 'the dataset'} {len(source.classes)} "
                    f"(or they are named differently); {fix}"
                )
        bad = set(m.get("bad", []))
        for i in [i for i in range(min(self.n, 4)) if i not in bad]:
            h, w = source.image(i).shape[-2:]
            want = _expected_size(int(h), int(w), m.get("max_side"))
            have = (int(self.heights[i]), int(self.widths[i]))
            # without a sidecar the writer's max side is unknown: a smaller stored image may be a downscaled one
            if have != want and (m or max(have) > max(want)):
                raise UserError(
                    f"{where}: image {i} is {have[0]}x{have[1]} but the dataset's is {want[0]}x{want[1]}; {fix}"
                )

    def decode(self, indices: np.ndarray) -> list[torch.Tensor]:
        """Items ``indices`` as uint8 [3, H_i, W_i] tensors (views into one fresh buffer per call)."""
        from cssl_bench.data import _jit_decode

        idx = np.asarray(indices, np.int64)
        h, w = self.heights[idx], self.widths[idx]
        out = np.empty((len(idx), int((h * w).max()) * 3), np.uint8)
        rc = _jit_decode.decode_batch(self.data, self.ptrs[idx], self.sizes[idx], h, w, self.modes[idx], out)
        if rc != 0:
            raise UserError(
                f"FFCV file {self.path}: image {int(idx[rc - 1])} could not be decoded (damaged file?); rewrite it"
            )
        t = torch.from_numpy(out)
        return [t[j, : h[j] * w[j] * 3].view(int(h[j]), int(w[j]), 3).permute(2, 0, 1) for j in range(len(idx))]


_OPEN: weakref.WeakKeyDictionary[ImageSource, dict] = weakref.WeakKeyDictionary()
_OPEN_LOCK = threading.Lock()


def open_checked(path: Path, source: ImageSource, dataset: str, split: str) -> Beton:
    """``Beton(path)`` checked against ``source``; kept open while ``source`` lives (the training loop
    asks again every epoch), and checked again if the file changes."""
    st = Path(path).stat() if Path(path).exists() else None
    key = (str(path), st.st_size if st else None, st.st_mtime_ns if st else None, dataset, split)
    with _OPEN_LOCK:
        known = _OPEN.setdefault(source, {})
        if key not in known:
            b = Beton(path)
            b.check(source, dataset, split)
            known[key] = b
        return known[key]


# ----------------------------------------------------------------------------------------------
# the loader


class FFCVViewLoader:
    """Training batches from a ``.beton``: the ``EpochSampler`` order, views from ``view_recipe`` per
    item (generator ``(seed, epoch, index)``), computed by ``workers`` threads ahead of the consumer."""

    def __init__(
        self,
        beton: Beton,
        view_recipe,
        batch_size: int,
        seed: int,
        epoch: int,
        start_batch: int = 0,
        workers: int = 2,
        rank: int = 0,
        world: int = 1,
        prefetch: int | None = None,
    ):
        if batch_size * world > beton.n:
            raise UserError(
                f"batch size {batch_size * world} is larger than the dataset ({beton.n} images); use a smaller --batch-size",
                exit_code=2,
            )
        self.beton, self.recipe, self.batch_size, self.seed, self.epoch = beton, view_recipe, batch_size, seed, epoch
        self.workers = max(1, workers)
        self.prefetch = prefetch or 2 * self.workers
        self.provenance = {"loader": "ffcv", **beton.storage}
        self.indices = np.asarray(
            EpochSampler(beton.n, batch_size, seed, epoch, start_batch, rank, world).indices, np.int64
        )

    def __len__(self) -> int:
        return len(self.indices) // self.batch_size

    def make_batch(self, idx: np.ndarray):
        from cssl_bench.data.batched import batched_views

        images = self.beton.decode(idx)
        rngs = [np.random.default_rng([self.seed, self.epoch, int(i)]) for i in idx]
        views = batched_views(self.recipe, images, rngs)
        return views, torch.from_numpy(self.beton.labels[idx].copy()), torch.from_numpy(idx.copy())

    def __iter__(self):
        batches = [self.indices[k * self.batch_size : (k + 1) * self.batch_size] for k in range(len(self))]
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="ffcv-views")
        pending: deque = deque()
        try:
            it = iter(batches)
            for b in it:
                pending.append(pool.submit(self.make_batch, b))
                if len(pending) >= self.prefetch:
                    break
            while pending:
                result = pending.popleft().result()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append(pool.submit(self.make_batch, nxt))
                yield result
        finally:  # also when the consumer stops early: drop the batches not started
            for f in pending:
                f.cancel()
            pool.shutdown(wait=True, cancel_futures=True)  # at most `workers` batches still running


def find_beton(dataset: str, split: str, options: DatasetOptions) -> Path | None:
    """The ``.beton`` for a dataset split: ``$CSSL_BENCH_BETON`` (one explicit file) or the default path."""
    explicit = os.environ.get("CSSL_BENCH_BETON")
    if explicit:
        return Path(explicit)
    p = default_beton_path(dataset, split, options)
    return p if p.is_file() else None


_NOTICED: set[str] = set()


def notice(msg: str) -> None:
    """A one-line notice on stderr, once per process and message."""
    if msg not in _NOTICED:
        _NOTICED.add(msg)
        print(f"notice: {msg}", file=sys.stderr)


def ffcv_train_loader(
    choice: str,
    dataset: str,
    source: ImageSource,
    options: DatasetOptions,
    view_recipe,
    batch_size: int,
    seed: int,
    epoch: int,
    start_batch: int,
    workers: int,
    rank: int,
    world: int,
):
    """The FFCV loader when ``choice`` (auto | ffcv) allows it, else None (the caller uses torchvision).

    auto: FFCV when it is installed and a ``.beton`` of the split exists. ffcv: as auto, and a missing
    ``.beton`` is written first (default path); without ffcv installed, a one-line notice."""
    if not ffcv_installed():
        if choice == "ffcv":
            notice(f"ffcv is not installed, so the torchvision loader is used; {INSTALL_HINT}")
        return None
    # the embedded datasets are generated pixels: JPEG storage would change them, and at 32 px what the tiny
    # recipes learn (docs/datasets.md), so the loader stores them raw, and ``auto`` does not swap a JPEG file in
    lossless = dataset.startswith("embedded")
    path = find_beton(dataset, "train", options)
    if path is not None and choice == "auto" and lossless and stored_as(read_sidecar(path))["storage"] != "raw":
        notice(
            f"{path} stores the {dataset} images as JPEG, which changes them, so loader auto reads the exact images "
            f"with torchvision (rewrite it with `cssl-bench data convert {dataset} --raw`, or set data.loader=ffcv "
            f"to train on the JPEG images)"
        )
        return None
    if path is None:
        if choice != "ffcv":
            return None
        path = default_beton_path(dataset, "train", options)
        notice(
            f"writing {path} for the FFCV loader (once; "
            + ("raw pixels, exact" if lossless else "JPEG quality 90; `cssl-bench data convert` sets quality and size")
            + ")"
        )
        write_beton(
            source,
            path,
            dataset=dataset,
            split="train",
            options=options,
            skip_bad=getattr(source, "skip_bad", False),
            workers=max(1, workers),
            raw=lossless,
        )
    try:
        beton = open_checked(path, source, dataset, "train")
    except ImportError as e:
        notice(f"ffcv cannot be imported ({e}), so the torchvision loader is used; {INSTALL_HINT}")
        return None
    return FFCVViewLoader(beton, view_recipe, batch_size, seed, epoch, start_batch, workers, rank, world)


__all__ = ["Beton", "FFCVViewLoader", "write_beton", "default_beton_path", "ffcv_installed", "ffcv_train_loader"]
