"""Atomic augmentations with explicit parameters, and the view recipes built from them.

An atomic augmentation has two halves: ``sample(rng, h, w) -> params`` draws its parameters (plain
numbers, so they can be logged, shared and compared) and ``apply(img, params) -> img`` is a
deterministic function of the image and those parameters. Images are uint8 tensors [3, H, W].

View recipes (``TwoViews``, ``MultiCrop``, ``LeaveOneOut``) turn one image into named views and
return the parameters they drew. LooC's ``LeaveOneOut`` draws q's parameters once and reuses
augmentation i's parameters for view k_i (docs/protocols.md, section 1). The same recipe objects drive the
torchvision loader and the FFCV loader.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

from cssl_bench.data.textures import TEXTURES, pattern, sample_texture_params

Params = dict[str, Any]


class Atomic:
    """Base class: ``name`` identifies the augmentation in recorded parameters and in LooC's ``--augment``."""

    name = "atomic"

    def sample(self, rng: np.random.Generator, h: int, w: int) -> Params:
        raise NotImplementedError

    def apply(self, img: torch.Tensor, p: Params) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, img: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, Params]:
        p = self.sample(rng, img.shape[-2], img.shape[-1])
        return self.apply(img, p), p


@dataclass
class ResizedCrop(Atomic):
    """Random resized crop (Inception-style): area fraction in ``scale``, aspect ratio in ``ratio``."""

    size: int
    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    name = "crop"

    def sample(self, rng, h, w):
        area = h * w
        log_r = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            ar = math.exp(rng.uniform(*log_r))
            cw, ch = int(round(math.sqrt(target * ar))), int(round(math.sqrt(target / ar)))
            if 0 < cw <= w and 0 < ch <= h:
                return {
                    "top": int(rng.integers(0, h - ch + 1)),
                    "left": int(rng.integers(0, w - cw + 1)),
                    "h": ch,
                    "w": cw,
                }
        s = min(h, w)  # fallback: central square crop
        return {"top": (h - s) // 2, "left": (w - s) // 2, "h": s, "w": s}

    def apply(self, img, p):
        return TF.resized_crop(img, p["top"], p["left"], p["h"], p["w"], [self.size, self.size], antialias=True)


@dataclass
class CenterResize(Atomic):
    """Deterministic evaluation transform: resize the short side to ``size / crop_frac``, centre-crop ``size``."""

    size: int
    crop_frac: float = 0.875
    name = "center"

    def sample(self, rng, h, w):
        return {}

    def __call__(self, img):  # deterministic: used directly as an evaluation transform
        return self.apply(img, {})

    def apply(self, img, p):
        resize = int(round(self.size / self.crop_frac))
        img = TF.resize(img, [resize], antialias=True)
        return TF.center_crop(img, [self.size, self.size])


@dataclass
class HFlip(Atomic):
    p: float = 0.5
    name = "flip"

    def sample(self, rng, h, w):
        return {"flip": bool(rng.random() < self.p)}

    def apply(self, img, p):
        return TF.horizontal_flip(img) if p["flip"] else img


@dataclass
class ColorJitter(Atomic):
    """Colour jitter (applied with prob ``p``, factors in a random order) then grayscale with ``p_gray``.

    ``gray_first``: apply the grayscale (still drawn with ``p_gray``) before the jitter factors instead
    of after them, as MoCo v1's pipeline does (RandomGrayscale before ColorJitter). It is a property of
    the transform, not a drawn parameter: the sampled parameters are the same either way.
    """

    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    p: float = 0.8
    p_gray: float = 0.2
    gray_first: bool = False
    name = "color"

    def sample(self, rng, h, w):
        apply = bool(rng.random() < self.p)
        return {
            "apply": apply,
            "order": [int(i) for i in rng.permutation(4)],
            "b": float(rng.uniform(1 - self.brightness, 1 + self.brightness)),
            "c": float(rng.uniform(1 - self.contrast, 1 + self.contrast)),
            "s": float(rng.uniform(1 - self.saturation, 1 + self.saturation)),
            "h": float(rng.uniform(-self.hue, self.hue)),
            "gray": bool(rng.random() < self.p_gray),
        }

    def apply(self, img, p):
        if p["gray"] and self.gray_first:
            img = TF.rgb_to_grayscale(img, num_output_channels=3)
        if p["apply"]:
            ops = [
                lambda x: TF.adjust_brightness(x, p["b"]),
                lambda x: TF.adjust_contrast(x, p["c"]),
                lambda x: TF.adjust_saturation(x, p["s"]),
                lambda x: TF.adjust_hue(x, p["h"]) if p["h"] != 0 else x,
            ]
            for i in p["order"]:
                img = ops[i](img)
        if p["gray"] and not self.gray_first:
            img = TF.rgb_to_grayscale(img, num_output_channels=3)
        return img


@dataclass
class Blur(Atomic):
    """Gaussian blur with sigma in ``sigma`` and a kernel of about 10% of the image side (SimCLR)."""

    p: float = 0.5
    sigma: tuple[float, float] = (0.1, 2.0)
    name = "blur"

    def sample(self, rng, h, w):
        return {"apply": bool(rng.random() < self.p), "sigma": float(rng.uniform(*self.sigma))}

    def apply(self, img, p):
        if not p["apply"]:
            return img
        k = max(3, int(0.1 * img.shape[-1]) // 2 * 2 + 1)
        return TF.gaussian_blur(img, [k, k], [p["sigma"], p["sigma"]])


@dataclass
class Solarize(Atomic):
    p: float = 0.0
    threshold: int = 128
    name = "solarize"

    def sample(self, rng, h, w):
        return {"apply": bool(rng.random() < self.p)}

    def apply(self, img, p):
        return TF.solarize(img, self.threshold) if p["apply"] else img


@dataclass
class Rotation(Atomic):
    """Rotation by one of 0/90/180/270 degrees (counter-clockwise); ``k`` is the number of quarter turns."""

    p: float = 1.0
    name = "rotation"

    def sample(self, rng, h, w):
        return {"k": int(rng.integers(0, 4)) if rng.random() < self.p else 0}

    def apply(self, img, p):
        return torch.rot90(img, p["k"], dims=(-2, -1)) if p["k"] else img


def texture_transfer(img: torch.Tensor, p: Params, strength: float = 0.6, sigma_frac: float = 0.06) -> torch.Tensor:
    """Procedural texture transfer: keep the low-frequency layout (object shape and colour), replace the
    high-frequency surface statistics with a procedural pattern.

    out = lowpass(img) * (1 + strength * (pattern - mean(pattern))). The Gaussian low-pass (sigma =
    ``sigma_frac`` of the side) removes the image's own fine texture; the multiplicative pattern
    writes a new one whose kind, frequency, angle and phase are the drawn parameters.
    """
    h, w = img.shape[-2:]
    sigma = max(0.5, sigma_frac * max(h, w))
    k = int(2 * math.ceil(2 * sigma) + 1)
    low = TF.gaussian_blur(img.float(), [k, k], [sigma, sigma])
    pat = torch.from_numpy(pattern(p["kind"], p, h, w))
    out = low * (1 + strength * (pat - pat.mean()))
    return out.clamp(0, 255).to(torch.uint8)


TEXTURE_TRANSFERS: dict[str, Callable[[torch.Tensor, Params], torch.Tensor]] = {"procedural": texture_transfer}


@dataclass
class Texture(Atomic):
    """LooC's texture augmentation: with prob ``p``, a texture transfer (``transfer`` names one in
    ``TEXTURE_TRANSFERS``, so a style-transfer network can be swapped in)."""

    p: float = 0.8
    transfer: str = "procedural"
    kinds: tuple[str, ...] = ("stripes", "checker", "dots", "noise", "waves")
    name = "texture"

    def sample(self, rng, h, w):
        return {"apply": bool(rng.random() < self.p), "kind": str(rng.choice(self.kinds)), **sample_texture_params(rng)}

    def apply(self, img, p):
        return TEXTURE_TRANSFERS[self.transfer](img, p) if p["apply"] else img


@dataclass
class Pipeline:
    """A sequence of atomic augmentations; ``run`` records the parameters of each under its name."""

    steps: list[Atomic]

    def run(
        self, img: torch.Tensor, rng: np.random.Generator, fixed: dict[str, Params] | None = None
    ) -> tuple[torch.Tensor, dict[str, Params]]:
        """Apply every step; a step named in ``fixed`` reuses those parameters instead of drawing new ones."""
        drawn: dict[str, Params] = {}
        for step in self.steps:
            p = fixed[step.name] if fixed and step.name in fixed else step.sample(rng, img.shape[-2], img.shape[-1])
            img = step.apply(img, p)
            drawn[step.name] = p
        return img, drawn


# ----------------------------------------------------------------------------------------------
# View recipes


@dataclass
class TwoViews:
    """Two views from (possibly different) pipelines: SimCLR, MoCo, SimSiam, BYOL's asymmetric pair."""

    first: Pipeline
    second: Pipeline

    def __call__(self, img, rng):
        v1, p1 = self.first.run(img, rng)
        v2, p2 = self.second.run(img, rng)
        return {"v1": v1, "v2": v2}, {"v1": p1, "v2": p2}


@dataclass
class MultiCrop:
    """SwAV multi-crop: ``n_large`` views from ``large`` then ``n_small`` from ``small``."""

    large: Pipeline
    small: Pipeline
    n_large: int = 2
    n_small: int = 6

    def __call__(self, img, rng):
        views, params = {}, {}
        for i in range(self.n_large):
            views[f"g{i}"], params[f"g{i}"] = self.large.run(img, rng)
        for i in range(self.n_small):
            views[f"l{i}"], params[f"l{i}"] = self.small.run(img, rng)
        return views, params


@dataclass
class LeaveOneOut:
    """LooC views: ``q``, ``k0`` and ``k1..km`` for the m variance heads among the atomic augmentations.

    q and k0 draw every augmentation independently; k_i reuses exactly q's parameters for the i-th
    variance head's augmentation and draws every other augmentation afresh. Base augmentations (crop,
    flip, blur) are drawn independently for every view. ``atomics`` is applied after ``base``.
    ``variant``: the names of the atomics that get a view k_i, in head order (None: every atomic, in
    order; [] : only q and k0).
    """

    base: Pipeline
    atomics: list[Atomic]
    post: Pipeline = field(default_factory=lambda: Pipeline([]))
    variant: list[str] | None = None

    def __post_init__(self):
        names = [a.name for a in self.atomics]
        unknown = [v for v in (self.variant or []) if v not in names]
        if unknown:
            raise ValueError(f"variant augmentations {unknown} are not among the atomics {names}")

    @property
    def variant_names(self) -> list[str]:
        return [a.name for a in self.atomics] if self.variant is None else list(self.variant)

    def _view(self, img, rng, shared: dict[str, Params] | None):
        x, pb = self.base.run(img, rng)
        x, pa = Pipeline(self.atomics).run(x, rng, fixed=shared)
        x, pp = self.post.run(x, rng)
        return x, {**pb, **pa, **pp}

    def __call__(self, img, rng):
        q, pq = self._view(img, rng, None)
        views, params = {"q": q}, {"q": pq}
        views["k0"], params["k0"] = self._view(img, rng, None)
        for i, name in enumerate(self.variant_names, start=1):
            views[f"k{i}"], params[f"k{i}"] = self._view(img, rng, {name: pq[name]})
        return views, params


@dataclass
class SingleView:
    """One view (supervised training and probes)."""

    pipeline: Pipeline

    def __call__(self, img, rng):
        v, p = self.pipeline.run(img, rng)
        return {"v1": v}, {"v1": p}


# ----------------------------------------------------------------------------------------------
# Named pipelines used by the recipes


def ssl_pipeline(
    size: int,
    crop_scale=(0.2, 1.0),
    color=None,
    blur_p: float = 0.0,
    solarize_p: float = 0.0,
    extra: list[Atomic] | None = None,
) -> Pipeline:
    """The common SSL augmentation: crop, flip, colour jitter + grayscale, optional blur/solarise/extras."""
    steps: list[Atomic] = [ResizedCrop(size, tuple(crop_scale)), HFlip()]
    if color is not False:
        steps.append(ColorJitter(**(color or {})))
    if blur_p > 0:
        steps.append(Blur(p=blur_p))
    if solarize_p > 0:
        steps.append(Solarize(p=solarize_p))
    steps.extend(extra or [])
    return Pipeline(steps)


ATOMIC_BY_NAME: dict[str, Callable[..., Atomic]] = {"color": ColorJitter, "rotation": Rotation, "texture": Texture}
KNOWN_TEXTURES = TEXTURES
