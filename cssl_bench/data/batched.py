"""A batched tensor stage that computes the views of a view recipe for a whole batch at once.

The FFCV loader decodes a batch of uint8 images and hands them here. The *same* view-recipe objects
as the torchvision path (``TwoViews``, ``MultiCrop``, ``LeaveOneOut`` (LooC, Xiao et al., ICLR 2021),
``SingleView``, ``SharedRotationTwoViews``) decide what happens; this module only changes *how* it is
computed:

1. ``plan_views`` draws every parameter exactly as the recipe's ``__call__`` would, from the same
   per-item generator (seed, epoch, index), in the same order, by calling the same ``Atomic.sample``
   methods. LooC's shared parameters come out identical: ``k_i`` reuses ``q``'s parameters of atomic
   augmentation i. ``tests/test_augment.py`` checks plan == recipe for every recipe type.
2. ``apply_plan`` applies the drawn parameters to the batch: the first crop + resize (images differ
   in size before it), colour jitter, grayscale, blur, solarisation, flips, rotations and the procedural texture transfer as batched operations
   with per-item parameters (numba kernels when numba is installed, else torch; the same arithmetic
   as torchvision's uint8 kernels within a grey level per operation), and any other augmentation
   (another texture transfer, user-defined ones) per item with its own ``apply``.

A recipe or augmentation this module does not know is computed item by item with the recipe itself
(``fallback``), so the meaning never changes, only the speed.

Shapes: images in are a list of uint8 [3, H_i, W_i]; views out are ``dict[name, uint8 [B, 3, S, S]]``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torchvision.transforms.v2.functional._color import _hsv_to_rgb, _rgb_to_hsv

from cssl_bench.data.augment import (
    TEXTURE_TRANSFERS,
    Atomic,
    Blur,
    CenterResize,
    ColorJitter,
    HFlip,
    LeaveOneOut,
    MultiCrop,
    ResizedCrop,
    Rotation,
    SingleView,
    Solarize,
    Texture,
    TwoViews,
    texture_transfer,
)
from cssl_bench.data.loader_base import prepare_numba
from cssl_bench.data.textures import pattern
from cssl_bench.data.views import SharedRotationTwoViews

Params = dict[str, Any]


class Unsupported(Exception):
    """The recipe (or one of its augmentations) has no plan here; the per-item fallback is used."""


# ----------------------------------------------------------------------------------------------
# 1. Planning: draw the parameters exactly as the recipe would


KNOWN_STEPS = (ResizedCrop, CenterResize, HFlip, ColorJitter, Blur, Solarize, Rotation, Texture)


def _out_size(step: Atomic, p: Params, h: int, w: int) -> tuple[int, int]:
    if isinstance(step, (ResizedCrop, CenterResize)):
        return step.size, step.size
    if isinstance(step, Rotation):
        return (w, h) if p["k"] % 2 else (h, w)
    if isinstance(step, KNOWN_STEPS):
        return h, w
    raise Unsupported(type(step).__name__)


def _plan_pipeline(steps: Sequence[Atomic], rng, h: int, w: int, fixed: dict[str, Params] | None = None):
    """Mirror of ``Pipeline.run``'s drawing: one ``sample`` per step on the current size."""
    out = []
    for step in steps:
        p = fixed[step.name] if fixed and step.name in fixed else step.sample(rng, h, w)
        out.append(p)
        h, w = _out_size(step, p, h, w)
    return out


@dataclass
class ViewPlan:
    """One view of a batch: the steps in order and, for every step, each item's parameters."""

    steps: list[Atomic]
    params: list[list[Params]]  # [step][item]

    def item_params(self, i: int) -> Params:
        """Item i's parameters keyed by augmentation name, as the recipe reports them."""
        return {s.name: ps[i] for s, ps in zip(self.steps, self.params)}


def _recipe_views(recipe) -> list[tuple[str, list[Atomic]]]:
    """The view names and step sequences of a known recipe type (raises ``Unsupported`` otherwise)."""
    if isinstance(recipe, SingleView):
        return [("v1", list(recipe.pipeline.steps))]
    if isinstance(recipe, TwoViews):
        return [("v1", list(recipe.first.steps)), ("v2", list(recipe.second.steps))]
    if isinstance(recipe, MultiCrop):
        return [(f"g{i}", list(recipe.large.steps)) for i in range(recipe.n_large)] + [
            (f"l{i}", list(recipe.small.steps)) for i in range(recipe.n_small)
        ]
    if isinstance(recipe, LeaveOneOut):
        steps = list(recipe.base.steps) + list(recipe.atomics) + list(recipe.post.steps)
        return [(k, steps) for k in ["q", "k0"] + [f"k{i}" for i in range(1, len(recipe.variant_names) + 1)]]
    if isinstance(recipe, SharedRotationTwoViews):
        return [(k, s + [recipe.rotation]) for k, s in _recipe_views(recipe.inner)]
    raise Unsupported(type(recipe).__name__)


def _plan_item(recipe, rng, h: int, w: int) -> list[list[Params]]:
    """Every view's per-step parameters for one item, drawn in the recipe's order."""
    if isinstance(recipe, SingleView):
        return [_plan_pipeline(recipe.pipeline.steps, rng, h, w)]
    if isinstance(recipe, TwoViews):
        return [_plan_pipeline(recipe.first.steps, rng, h, w), _plan_pipeline(recipe.second.steps, rng, h, w)]
    if isinstance(recipe, MultiCrop):
        return [_plan_pipeline(recipe.large.steps, rng, h, w) for _ in range(recipe.n_large)] + [
            _plan_pipeline(recipe.small.steps, rng, h, w) for _ in range(recipe.n_small)
        ]
    if isinstance(recipe, LeaveOneOut):
        nb, na = len(recipe.base.steps), len(recipe.atomics)

        def view(shared):
            pb = _plan_pipeline(recipe.base.steps, rng, h, w)
            hh, ww = h, w
            for s, p in zip(recipe.base.steps, pb):
                hh, ww = _out_size(s, p, hh, ww)
            pa = _plan_pipeline(recipe.atomics, rng, hh, ww, fixed=shared)
            for s, p in zip(recipe.atomics, pa):
                hh, ww = _out_size(s, p, hh, ww)
            return pb + pa + _plan_pipeline(recipe.post.steps, rng, hh, ww)

        q = view(None)
        out = [q, view(None)]
        index = {a.name: i for i, a in enumerate(recipe.atomics)}
        for name in recipe.variant_names:  # k_{i+1}: q's parameters of the i-th variance head's augmentation
            out.append(view({name: q[nb + index[name]]}))
        assert all(len(v) == nb + na + len(recipe.post.steps) for v in out)
        return out
    if isinstance(recipe, SharedRotationTwoViews):
        inner = _plan_item(recipe.inner, rng, h, w)
        p = recipe.rotation.sample(rng, h, w)  # drawn after the inner views, on the source size, as the recipe does
        return [v + [p] for v in inner]
    raise Unsupported(type(recipe).__name__)


def plan_views(recipe, sizes: Sequence[tuple[int, int]], rngs: Sequence[np.random.Generator]) -> dict[str, ViewPlan]:
    """Draw the parameters of every view of every item. ``sizes[i]`` is item i's (H, W)."""
    names = _recipe_views(recipe)
    for _, steps in names:
        for s in steps:
            if not isinstance(s, KNOWN_STEPS):
                raise Unsupported(type(s).__name__)
    per_item = [_plan_item(recipe, rng, h, w) for (h, w), rng in zip(sizes, rngs)]
    plans = {}
    for v, (name, steps) in enumerate(names):
        plans[name] = ViewPlan(steps, [[per_item[i][v][s] for i in range(len(per_item))] for s in range(len(steps))])
    return plans


# ----------------------------------------------------------------------------------------------
# 2. Applying: batched kernels with per-item parameters


def _gray_float(x: torch.Tensor) -> torch.Tensor:
    """[B,3,H,W] uint8 -> [B,1,H,W] float32 luma, the same operation sequence as torchvision's kernel."""
    r, g, b = x.unbind(dim=-3)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(-3)


def _blend(x: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """ratio * x + (1 - ratio) * other, clamped and truncated to uint8 (torchvision's ``_blend``)."""
    return x.mul(ratio).add_(other * (1.0 - ratio)).clamp_(0, 255).to(torch.uint8)


def brightness(x, f):
    return x.mul(f).clamp_(0, 255).to(torch.uint8)


def contrast(x, f):
    mean = _gray_float(x).floor_().mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(x, mean, f)


def saturation(x, f):
    return _blend(x, _gray_float(x).floor_(), f)


def hue(x, f):
    """Hue shift by f (fraction of a turn) per item; items with f == 0 are left as they are, as in ``ColorJitter``."""
    keep = f.view(-1) == 0
    hsv = _rgb_to_hsv(TF.to_dtype(x, torch.float32, scale=True))
    h, s, v = hsv.unbind(dim=-3)
    h = h.add(f.view(-1, 1, 1)).remainder_(1.0)
    out = TF.to_dtype(_hsv_to_rgb(torch.stack((h, s, v), dim=-3)), torch.uint8, scale=True)
    if keep.any():
        out[keep] = x[keep]
    return out


def _factor(ps: list[Params], key: str, idx: list[int]) -> torch.Tensor:
    return torch.tensor([ps[i][key] for i in idx], dtype=torch.float32).view(-1, 1, 1, 1)


_JIT = None


def jit_kernels():
    """The numba kernels (``cssl_bench.data._jit_views``), or None when numba is not installed."""
    global _JIT
    if _JIT is None:
        try:
            prepare_numba()
            from cssl_bench.data import _jit_views

            _JIT = _jit_views
        except ImportError:
            _JIT = False
    return _JIT or None


def color_jitter(
    x: torch.Tensor, ps: list[Params], use_jit: bool | None = None, gray_first: bool = False
) -> torch.Tensor:
    """``ColorJitter.apply`` for a batch: the four factors in each item's drawn order, then grayscale
    (with ``gray_first``, the transform's ``ColorJitter.gray_first``: grayscale, then the factors).

    With numba (``use_jit`` None or True) one compiled pass per operation and image; otherwise
    batched torch operations, items grouped by their drawn order."""
    jit = jit_kernels() if use_jit is not False else None
    if jit is not None:
        out = x.contiguous().clone()
        jit.color_jitter(
            out.numpy(),
            np.array([p["apply"] for p in ps], np.bool_),
            np.array([p["order"] for p in ps], np.int64),
            *(np.array([p[k] for p in ps], np.float32) for k in ("b", "c", "s", "h")),
            np.array([p["gray"] for p in ps], np.bool_),
            bool(gray_first),
        )
        return out
    gray = [i for i, p in enumerate(ps) if p["gray"]]
    out = x.clone()
    if gray_first and gray:
        out[gray] = TF.rgb_to_grayscale(out[gray], num_output_channels=3)
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(ps):
        if p["apply"]:
            groups.setdefault(tuple(p["order"]), []).append(i)
    ops = {0: ("b", brightness), 1: ("c", contrast), 2: ("s", saturation)}
    for order, idx in groups.items():
        sub = out[idx]  # a copy (groups are disjoint); with gray_first, already grayscale
        for o in order:
            if o == 3:
                sub = hue(sub, _factor(ps, "h", idx).view(-1))
            else:
                key, fn = ops[o]
                sub = fn(sub, _factor(ps, key, idx))
        out[idx] = sub
    if gray and not gray_first:
        out[gray] = TF.rgb_to_grayscale(out[gray], num_output_channels=3)
    return out


def _gauss1d(k: int, sigma: float) -> torch.Tensor:
    # torchvision's kernel: softmax(-(x / sigma)^2) over k points spanning +-(k-1)/(2 sqrt 2)
    lim = (k - 1) / (2.0 * math.sqrt(2.0))
    x = torch.linspace(-lim, lim, steps=k, dtype=torch.float32)
    return torch.softmax(x.div(sigma).pow(2).neg(), dim=0)


def blur(x: torch.Tensor, ps: list[Params], use_jit: bool | None = None) -> torch.Tensor:
    """``Blur.apply`` for a batch: separable Gaussian per item (its own sigma), reflect padding, rounded."""
    idx = [i for i, p in enumerate(ps) if p["apply"]]
    if not idx:
        return x
    b, c, h, w = len(idx), x.shape[1], x.shape[2], x.shape[3]
    k = max(3, int(0.1 * w) // 2 * 2 + 1)
    kern = torch.stack([_gauss1d(k, ps[i]["sigma"]) for i in idx])  # [b, k]
    jit = jit_kernels() if use_jit is not False else None
    if jit is not None and k // 2 < min(h, w):
        out = x.contiguous().clone()
        jit.blur_batch(out.numpy(), np.asarray(idx, np.int64), kern.numpy())
        return out
    kern = kern.repeat_interleave(c, dim=0)  # [b*c, k]
    y = x[idx].float().reshape(1, b * c, h, w)
    y = F.pad(y, [k // 2] * 4, mode="reflect")
    y = F.conv2d(y, kern.view(b * c, 1, k, 1), groups=b * c)
    y = F.conv2d(y, kern.view(b * c, 1, 1, k), groups=b * c)
    out = x.clone()
    out[idx] = y.reshape(b, c, h, w).round_().to(torch.uint8)
    return out


def texture(step: Texture, x: torch.Tensor, ps: list[Params]) -> torch.Tensor | None:
    """``Texture.apply`` for a batch with the procedural transfer (``augment.texture_transfer``):
    low-pass of each image (one Gaussian for the batch: its sigma depends on the size only, computed
    separably, as float) times each item's pattern. None for any other transfer (applied per item)."""
    if TEXTURE_TRANSFERS.get(step.transfer) is not texture_transfer:
        return None
    idx = [i for i, p in enumerate(ps) if p["apply"]]
    if not idx:
        return x
    defaults = {k: v.default for k, v in inspect.signature(texture_transfer).parameters.items()}
    strength, sigma_frac = defaults["strength"], defaults["sigma_frac"]
    h, w = x.shape[-2:]
    sigma = max(0.5, sigma_frac * max(h, w))
    k = int(2 * math.ceil(2 * sigma) + 1)
    if k // 2 >= min(h, w):  # reflect padding impossible: per item, as the transfer itself does
        return None
    g = _gauss1d(k, sigma)
    jit = jit_kernels()
    if jit is not None:  # torch's conv2d is slow for one long 1-D kernel on a few planes
        y = torch.empty(len(idx), 3, h, w, dtype=torch.float32)
        jit.lowpass_batch(x.contiguous().numpy(), np.asarray(idx, np.int64), g.numpy(), y.numpy())
    else:
        y = F.pad(x[idx].float().reshape(-1, 1, h, w), [k // 2] * 4, mode="reflect")
        y = F.conv2d(F.conv2d(y, g.view(1, 1, k, 1)), g.view(1, 1, 1, k)).reshape(len(idx), 3, h, w)
    pats = torch.stack([torch.from_numpy(pattern(ps[i]["kind"], ps[i], h, w)) for i in idx])  # [b, h, w]
    pats = pats - pats.mean(dim=(1, 2), keepdim=True)
    out = x.clone()
    out[idx] = (y * (1 + strength * pats).unsqueeze(1)).clamp(0, 255).to(torch.uint8)
    return out


def solarize(x: torch.Tensor, ps: list[Params], threshold: int) -> torch.Tensor:
    m = torch.tensor([p["apply"] for p in ps], dtype=torch.bool).view(-1, 1, 1, 1)
    return torch.where(m & (x >= threshold), x.bitwise_not(), x)


def hflip(x: torch.Tensor, ps: list[Params]) -> torch.Tensor:
    idx = [i for i, p in enumerate(ps) if p["flip"]]
    if idx:
        x = x.clone()
        x[idx] = x[idx].flip(-1)
    return x


def rotate(x: torch.Tensor, ps: list[Params]) -> torch.Tensor:
    out = x.clone()
    for k in (1, 2, 3):
        idx = [i for i, p in enumerate(ps) if p["k"] == k]
        if idx:
            out[idx] = torch.rot90(x[idx], k, dims=(-2, -1))
    return out


def _stack_if_equal(imgs: list[torch.Tensor]):
    return torch.stack(imgs) if len({tuple(t.shape) for t in imgs}) == 1 else None


def resized_crop(step: ResizedCrop, x, ps: list[Params]) -> torch.Tensor:
    """``ResizedCrop.apply`` for a batch of images of any sizes (list of [3,H_i,W_i] or [B,3,H,W]) -> [B,3,S,S]."""
    jit = jit_kernels()
    imgs = list(x)
    if jit is None:
        return torch.stack([step.apply(img, p) for img, p in zip(imgs, ps)])
    hw = np.array([t.shape[-2:] for t in imgs], np.int64)
    buf = np.empty((len(imgs), int((hw[:, 0] * hw[:, 1]).max()) * 3), np.uint8)
    for j, t in enumerate(imgs):  # HWC bytes, as decoded (a view, no copy, when they come from the decoder)
        buf[j, : hw[j, 0] * hw[j, 1] * 3] = t.permute(1, 2, 0).reshape(-1).numpy()
    crop = np.array([[p["top"], p["left"], p["h"], p["w"]] for p in ps], np.int64)
    out = torch.empty(len(imgs), 3, step.size, step.size, dtype=torch.uint8)
    jit.resized_crop_batch(
        buf,
        hw[:, 0].copy(),
        hw[:, 1].copy(),
        crop[:, 0].copy(),
        crop[:, 1].copy(),
        crop[:, 2].copy(),
        crop[:, 3].copy(),
        out.numpy(),
    )
    return out


def apply_step(step: Atomic, x, ps: list[Params]):
    """Apply one step to a batch (``x``: uint8 [B,3,H,W], or a list of [3,H_i,W_i] before the first resize)."""
    if type(step) is ResizedCrop:
        return resized_crop(step, x, ps)
    if isinstance(x, list):
        stacked = None if isinstance(step, (ResizedCrop, CenterResize)) else _stack_if_equal(x)
        if stacked is None:  # sizes differ (or a resize is next): the step's own apply, item by item
            out = [step.apply(img, p) for img, p in zip(x, ps)]
            stacked = _stack_if_equal(out)
            return stacked if stacked is not None else out
        x = stacked
    if isinstance(step, HFlip):
        return hflip(x, ps)
    if isinstance(step, ColorJitter):
        return color_jitter(x, ps, gray_first=step.gray_first)
    if isinstance(step, Blur):
        return blur(x, ps)
    if isinstance(step, Solarize):
        return solarize(x, ps, step.threshold)
    if isinstance(step, Rotation) and x.shape[-1] == x.shape[-2]:
        return rotate(x, ps)
    if isinstance(step, Texture):
        out = texture(step, x, ps)
        if out is not None:
            return out
    # per item with the augmentation's own apply: resizes, texture, rotation of non-square images
    out = [step.apply(x[i], p) for i, p in enumerate(ps)]
    stacked = _stack_if_equal(out)
    return stacked if stacked is not None else out


def apply_plan(plans: dict[str, ViewPlan], images: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    views = {}
    for name, plan in plans.items():
        x = list(images)
        for step, ps in zip(plan.steps, plan.params):
            x = apply_step(step, x, ps)
        if isinstance(x, list):
            x = _stack_if_equal(x)
            if x is None:
                raise ValueError(f"view {name!r} has images of different sizes; end the pipeline with a crop or resize")
        views[name] = x.contiguous()
    return views


def fallback(recipe, images: list[torch.Tensor], rngs) -> dict[str, torch.Tensor]:
    """The recipe itself, item by item (recipes or augmentations without a plan)."""
    per = [recipe(img, rng)[0] for img, rng in zip(images, rngs)]
    return {k: torch.stack([v[k] for v in per]) for k in per[0]}


def batched_views(recipe, images: list[torch.Tensor], rngs: Sequence[np.random.Generator]) -> dict[str, torch.Tensor]:
    """The views of ``recipe`` for a batch: uint8 [B,3,S,S] per view name, the same meaning as calling
    ``recipe(images[i], rngs[i])`` for every i."""
    try:
        plans = plan_views(recipe, [tuple(t.shape[-2:]) for t in images], rngs)
    except Unsupported:
        return fallback(recipe, images, rngs)
    return apply_plan(plans, images)
