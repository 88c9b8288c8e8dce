"""ImageNet-C's 15 corruptions x 5 severities on any dataset (Hendrycks & Dietterich, Benchmarking
Neural Network Robustness to Common Corruptions and Perturbations, ICLR 2019), through the
``imagecorruptions`` module of the ``imagecorruptions-imaug`` package.

Groups (docs/protocols.md, section 2, LooC Table 3): Noise = gaussian, shot, impulse; Blur = defocus, glass, motion,
zoom; Weather = snow, frost, fog, brightness; Digital = contrast, elastic, pixelate, jpeg.

Determinism: the library draws from numpy's global RNG (and glass blur from numba's, impulse noise
from a ``seed`` argument). Each image is corrupted under its own seed, derived from
``(seed, corruption, severity, index)``, and the global RNG state is restored afterwards, so a
corrupted image depends on nothing else (not on order, batch, worker or what ran before).

Small images: the library refuses images under 32 px, and its parameters are ImageNet's (224 px):
a disk blur of radius 10 erases a 32 px image, while per-pixel noise keeps its strength at any size.
Images whose short side is under ``min_size`` are therefore upscaled (bicubic) to ``min_size``,
corrupted, and downscaled back (antialiased), a named option recorded with every result. The
default 64 halves the geometric corruptions' relative extent at 32 px and keeps the noise visible
(downscaling averages it: by about 2x in std at 64, 7x at 224). ``min_size=224`` reproduces
ImageNet-C's geometry relative to the image at about ten times the cost; at paper scale (224 px
images) no resizing happens.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

from cssl_bench import UserError
from cssl_bench.data.datasets import ImageSource

GROUPS: dict[str, tuple[str, ...]] = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog", "brightness"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
}
CORRUPTIONS: tuple[str, ...] = tuple(c for g in GROUPS.values() for c in g)
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
SHORT_NAMES = {
    "gaussian": "gaussian_noise",
    "shot": "shot_noise",
    "impulse": "impulse_noise",
    "defocus": "defocus_blur",
    "glass": "glass_blur",
    "motion": "motion_blur",
    "zoom": "zoom_blur",
    "elastic": "elastic_transform",
    "jpeg": "jpeg_compression",
}
HIGH_SEVERITIES = (4, 5)  # "d>3" (docs/protocols.md, section 2, [open])


def parse_corruptions(text: str | None) -> list[str]:
    """``None``/``all`` -> the 15; otherwise a comma list of names, short names or group names."""
    if text is None or text.strip() in ("", "all"):
        return list(CORRUPTIONS)
    out: list[str] = []
    for tok in (t.strip() for t in text.split(",")):
        if not tok:
            continue
        names = GROUPS.get(tok) or (SHORT_NAMES.get(tok, tok),)
        for n in names:
            if n not in CORRUPTIONS:
                raise UserError(
                    f"unknown corruption {tok!r}; choose from {', '.join(CORRUPTIONS)} or a group ({', '.join(GROUPS)})",
                    exit_code=2,
                )
            if n not in out:
                out.append(n)
    if not out:
        raise UserError("no corruptions selected", exit_code=2)
    return [c for c in CORRUPTIONS if c in out]  # canonical order


def parse_severities(text: str | None) -> list[int]:
    """``None``/``all`` -> 1..5; otherwise a comma list such as ``1,3,5`` or a range ``4-5``."""
    if text is None or text.strip() in ("", "all"):
        return list(SEVERITIES)
    out: set[int] = set()
    try:
        for tok in (t.strip() for t in text.split(",") if t.strip()):
            if "-" in tok:
                a, b = (int(x) for x in tok.split("-", 1))
                out.update(range(a, b + 1))
            else:
                out.add(int(tok))
    except ValueError:
        raise UserError(f"severities must be integers 1..5 (e.g. 1,3,5 or 4-5), got {text!r}", exit_code=2) from None
    if not out or not out <= set(SEVERITIES):
        raise UserError(f"severities must be in 1..5, got {text!r}", exit_code=2)
    return sorted(out)


def image_seed(seed: int, corruption: str, severity: int, index: int) -> int:
    """A 32-bit seed for one corrupted image, from (seed, corruption, severity, index)."""
    ss = np.random.SeedSequence([int(seed), CORRUPTIONS.index(corruption), int(severity), int(index)])
    return int(ss.generate_state(1, np.uint32)[0])


def corrupt_image(
    img: torch.Tensor, corruption: str, severity: int, seed: int = 0, index: int = 0, min_size: int = 64
) -> torch.Tensor:
    """Corrupt one uint8 image [3, H, W] -> uint8 [3, H, W], deterministic in (seed, corruption, severity, index).

    Images with a side under ``min_size`` are corrupted at a bicubic upscale (short side ``min_size``,
    at least the library's 32) and downscaled back with antialiasing.
    """
    from imagecorruptions import corrupt

    if corruption not in CORRUPTIONS:
        raise UserError(f"unknown corruption {corruption!r}; choose from {', '.join(CORRUPTIONS)}", exit_code=2)
    if severity not in SEVERITIES:
        raise UserError(f"severity must be in 1..5, got {severity}", exit_code=2)
    h, w = img.shape[-2:]
    target = max(int(min_size), 32)
    x = img
    if min(h, w) < target:
        s = target / min(h, w)
        x = TF.resize(
            img,
            [max(target, round(h * s)), max(target, round(w * s))],
            interpolation=TF.InterpolationMode.BICUBIC,
            antialias=True,
        )
    arr = np.ascontiguousarray(x.permute(1, 2, 0).numpy())
    s32 = image_seed(seed, corruption, severity, index)
    kwargs = {"seed": s32} if corruption in ("glass_blur", "impulse_noise") else {}
    state = np.random.get_state()
    try:
        np.random.seed(s32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = corrupt(arr, severity=severity, corruption_name=corruption, **kwargs)
    finally:
        np.random.set_state(state)
    out_t = torch.from_numpy(np.array(out[..., :3], dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()
    if out_t.shape[-2:] != (h, w):
        out_t = TF.resize(out_t, [h, w], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    return out_t


class CorruptedSource(ImageSource):
    """``source`` with one corruption at one severity; ``transform`` (e.g. the evaluation resize + centre
    crop) is applied *before* corrupting, as ImageNet-C corrupted 224 px centre crops. Labels and
    classes are the source's. ``image(i)`` is deterministic in (seed, corruption, severity, i)."""

    def __init__(
        self, source: ImageSource, corruption: str, severity: int, seed: int = 0, min_size: int = 64, transform=None
    ):
        self.source, self.corruption, self.severity, self.seed, self.min_size = (
            source,
            corruption,
            severity,
            seed,
            min_size,
        )
        self.transform = transform
        self.labels, self.classes = source.labels, source.classes
        self.name = f"{getattr(source, 'name', 'source')}/{corruption}/{severity}"

    def clean(self, i: int) -> torch.Tensor:
        img = self.source.image(i)
        return self.transform(img) if self.transform is not None else img

    def image(self, i: int) -> torch.Tensor:
        return corrupt_image(self.clean(i), self.corruption, self.severity, self.seed, i, self.min_size)


class ArrayImages(ImageSource):
    """Pre-rendered uint8 images [N, 3, H, W] with labels (a cached corrupted set)."""

    def __init__(self, name: str, images: np.ndarray, labels: np.ndarray, classes: list[str]):
        self.name, self.images, self.labels, self.classes = name, images, np.asarray(labels, np.int64), list(classes)

    def image(self, i):
        return torch.from_numpy(self.images[i])


def render(source: CorruptedSource) -> np.ndarray:
    """Every corrupted image of ``source`` as one uint8 array [N, 3, H, W] (sizes must agree)."""
    imgs = [source.image(i).numpy() for i in range(len(source))]
    shapes = {im.shape for im in imgs}
    if len(shapes) != 1:
        raise UserError(
            f"cannot stack corrupted images of different sizes {sorted(shapes)[:3]}; pass a transform that fixes the size"
        )
    return np.stack(imgs)


def cached_corrupted(source: CorruptedSource, key: dict, cache_root: Path, max_bytes: int = 64 << 20) -> ImageSource:
    """The corrupted images of ``source`` rendered once and kept as ``.npy`` under ``cache_root`` (shared by
    every run probed on the same test set), when one set fits in ``max_bytes``; else ``source`` itself."""
    first = source.clean(0) if len(source) else None  # a corrupted image has its clean image's shape
    if first is None or first.numel() * len(source) > max_bytes:
        return source
    digest = hashlib.sha256(repr(sorted(key.items())).encode()).hexdigest()[:16]
    path = Path(cache_root) / f"{source.corruption}-s{source.severity}-{digest}.npy"
    if path.exists():
        try:
            arr = np.load(path)
            if arr.shape[0] == len(source):
                return ArrayImages(source.name, arr, source.labels, source.classes)
        except (OSError, ValueError):
            pass  # damaged cache file: render again
    arr = render(source)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        with open(tmp, "wb") as f:
            np.save(f, arr)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        pass  # the cache is an optimisation
    return ArrayImages(source.name, arr, source.labels, source.classes)


def group_means(acc: dict[tuple[str, int], float]) -> dict[str, float]:
    """Group means of per-(corruption, severity) accuracies (docs/protocols.md, section 2).

    ``noise``/``blur``/``weather``/``digital``: mean over the group's corruptions and every severity
    given; ``all``: mean over every (corruption, severity) given (15 x 5 for the full protocol);
    ``d>3``: mean over every corruption at severities 4 and 5. A group with no entries is left out.
    """
    out: dict[str, float] = {}
    for g, names in GROUPS.items():
        vals = [v for (c, _), v in acc.items() if c in names]
        if vals:
            out[g] = float(np.mean(vals))
    if acc:
        out["all"] = float(np.mean(list(acc.values())))
    high = [v for (_, s), v in acc.items() if s in HIGH_SEVERITIES]
    if high:
        out["d>3"] = float(np.mean(high))
    return out
